"""Where a run's models live: the folder or recipe file each model is loaded from, the folders that
recipe reads, and the run's folders they sit in (fine-tuning outputs, recipes, greedy generations,
evaluations).

Paths only: nothing is read, so the Snakefile builds its DAG from these (this module imports no
torch), and a new kind of model adds its case to `RunLayout.source` and `RunLayout.model_locations`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exme.pipeline.catalogue import BASE, FINAL, SHARED_SCOPE, match_name, model_name, sft_step
from exme.pipeline.greedy_steps import generation_dir, generation_recipe_file
from exme.train.checkpoints import checkpoint_folder


@dataclass(frozen=True)
class ModelSource:
    """What a job that loads a model reads: `path`, the model's folder or recipe file (or the
    folder holding it, see RunLayout.model_locations), and `reads`, {input name: folder} of the
    models that recipe names."""

    path: str
    reads: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunLayout:
    """The folders of one run under `out` (results/{run}); a seed's outputs are under `out/{scope}`.
    A scope or name may be a Snakemake wildcard ("{scope}"): a rule's pattern comes from here too."""

    out: str
    base: str  # the base model's folder
    experts: Sequence[str]  # the experts' names (config `experts`)
    expert_folder: str  # the folder, inside an expert's fine-tuning output, of its one model

    def finetune_dir(self, scope: str, trainee: str) -> str:
        """The output of a fine-tuning: the SFT run's checkpoints (`sft`) or an expert's."""
        return f"{self.out}/{scope}/finetune/{trainee}"

    def expert_dir(self, scope: str, expert: str) -> str:
        return self.finetune_dir(scope, model_name("expert", expert=expert))

    def expert_locations(self, scope: str) -> dict[str, str]:
        """{expert model name: its model folder}, for the recipes that merge experts."""
        return {
            model_name("expert", expert=e): f"{self.expert_dir(scope, e)}/{self.expert_folder}"
            for e in self.experts
        }

    def selection_file(self, scope: str) -> str:
        """The checkpoints selected on dev."""
        return f"{self.out}/{scope}/selection.json"

    def recipe_file(self, scope: str, model: str) -> str:
        return f"{self.out}/{scope}/recipes/{model}.yaml"

    def final_dir(self, scope: str) -> str:
        """The exported ExMe model."""
        return f"{self.out}/{scope}/final"

    def eval_file(self, scope: str, split: str, model: str) -> str:
        """A model's evaluation on a split; the base model's is shared by every seed."""
        return f"{self.out}/{SHARED_SCOPE if model == BASE else scope}/eval/{split}/{model}.json"

    def greedy_root(self, scope: str) -> str:
        return f"{self.out}/{scope}/greedy"

    def greedy_dir(self, scope: str, track: str, variant: str, generation: int | str) -> str:
        return generation_dir(self.greedy_root(scope), track, variant, generation)

    def greedy_pool_file(self, scope: str, track: str, variant: str) -> str:
        """The final pool of a greedy merging, beside the recipe of its best model."""
        return f"{self.greedy_root(scope)}/{track}-{variant}.json"

    def track_inputs(self, scope: str, track: str) -> dict[str, str]:
        """What the recipes of a track read: the selected checkpoints, or the experts."""
        if track == "checkpoint":
            return {"selection": self.selection_file(scope), "checkpoints": self.finetune_dir(scope, "sft")}
        return {f"expert_{expert}": self.expert_dir(scope, expert) for expert in self.experts}

    def greedy_reads(self, scope: str, track: str, variant: str, generation: int | str) -> dict[str, str]:
        """Every folder a model of `generation` may name: the experts and all earlier generations."""
        reads = {f"expert_{expert}": self.expert_dir(scope, expert) for expert in self.experts}
        for earlier in range(1, int(generation) + 1):
            reads[f"greedy_g{earlier}"] = self.greedy_dir(scope, track, variant, earlier)
        return reads

    def source(self, scope: str, model: str) -> ModelSource:
        """The folder or recipe a model is loaded from, with the folders that recipe reads."""
        if greedy := match_name("greedy_model", model):
            track, variant, generation = greedy["track"], greedy["variant"], greedy["generation"]
            reads = self.greedy_reads(scope, track, variant, generation)
            return ModelSource(self.greedy_dir(scope, track, variant, generation), reads)
        if greedy := match_name("greedy", model):
            pool = self.greedy_pool_file(scope, greedy["track"], greedy["variant"])
            return ModelSource(self.recipe_file(scope, model), {"greedy_pool": pool})
        if sft_step(model) is not None:
            return ModelSource(self.finetune_dir(scope, "sft"))
        if expert := match_name("expert", model):
            return ModelSource(self.expert_dir(scope, expert["expert"]))
        if model == FINAL:
            return ModelSource(self.final_dir(scope))
        if model == BASE:
            return ModelSource(self.base)
        return ModelSource(self.recipe_file(scope, model), self.track_inputs(scope, _track_of(model)))

    def model_inputs(self, scope: str, models: Sequence[str]) -> dict[str, str]:
        """The inputs of a job that loads `models`: each one's source as `model_<i>`, and the
        folders their recipes read."""
        inputs = {}
        for index, model in enumerate(models):
            source = self.source(scope, model)
            inputs |= {f"model_{index}": source.path, **source.reads}
        return inputs

    def model_locations(self, models: Sequence[str], inputs: Mapping[str, str]) -> list[str]:
        """Where each model is loaded from, given the job's inputs (see model_inputs): SFT
        checkpoints and experts are step folders inside their fine-tuning's output, a greedy
        generation's models recipes inside its folder."""
        locations = []
        for index, model in enumerate(models):
            location = inputs[f"model_{index}"]
            step = sft_step(model)
            if step is not None:
                location = f"{location}/{checkpoint_folder(step)}"
            elif match_name("expert", model):
                location = f"{location}/{self.expert_folder}"
            elif match_name("greedy_model", model):
                location = generation_recipe_file(location, model)
            locations.append(location)
        return locations


def _track_of(model: str) -> str:
    """The track whose fine-tuned models a recipe model reads."""
    fields = match_name("merge", model) or match_name("merge_point", model)
    return fields["track"] if fields else "checkpoint"
