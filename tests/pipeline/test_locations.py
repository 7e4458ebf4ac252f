"""Where each kind of model lives: the folder or recipe its evaluation reads, what that recipe reads,
and the folder or file it is loaded from."""

import pytest

from exme.pipeline.locations import ModelSource, RunLayout

LAYOUT = RunLayout("results/run", "models/base", ["arith", "count"], "step-300")
CHECKPOINT_TRACK = {
    "selection": "results/run/seed1/selection.json",
    "checkpoints": "results/run/seed1/finetune/sft",
}
EXPERTS = {
    "expert_arith": "results/run/seed1/finetune/ft-arith",
    "expert_count": "results/run/seed1/finetune/ft-count",
}


@pytest.mark.parametrize(
    ("model", "source", "location"),
    [
        ("base", ModelSource("models/base"), "models/base"),
        ("sft-20", ModelSource("results/run/seed1/finetune/sft"), "results/run/seed1/finetune/sft/step-20"),
        (
            "ft-arith",
            ModelSource("results/run/seed1/finetune/ft-arith"),
            "results/run/seed1/finetune/ft-arith/step-300",
        ),
        ("exme", ModelSource("results/run/seed1/final"), "results/run/seed1/final"),
        # Recipes: extrapolations and ExMe read the selected checkpoints, a merge its track's models.
        *(
            (model, ModelSource(f"results/run/seed1/recipes/{model}.yaml", CHECKPOINT_TRACK), None)
            for model in ("expo1-a0.5", "expo-step20-a0.5", "expo2", "exme-b0.75", "checkpoint-ties")
        ),
        ("expert-ties", ModelSource("results/run/seed1/recipes/expert-ties.yaml", EXPERTS), None),
        (
            "expert-task_arithmetic-s0.5",
            ModelSource("results/run/seed1/recipes/expert-task_arithmetic-s0.5.yaml", EXPERTS),
            None,
        ),
        # Greedy merging: the best model's recipe with its pool, and each generation's recipes.
        (
            "expert-greedy_explore",
            ModelSource(
                "results/run/seed1/recipes/expert-greedy_explore.yaml",
                {"greedy_pool": "results/run/seed1/greedy/expert-greedy_explore.json"},
            ),
            None,
        ),
        (
            "expert-greedy-g1-m3",
            ModelSource(
                "results/run/seed1/greedy/expert-pairs",
                {**EXPERTS, "greedy_g1": "results/run/seed1/greedy/expert-pairs"},
            ),
            "results/run/seed1/greedy/expert-pairs/recipes/expert-greedy-g1-m3.yaml",
        ),
        (
            "expert-greedy_explore-g3-m2",
            ModelSource(
                "results/run/seed1/greedy/expert-greedy_explore/g3",
                {
                    **EXPERTS,
                    "greedy_g1": "results/run/seed1/greedy/expert-pairs",
                    "greedy_g2": "results/run/seed1/greedy/expert-greedy_explore/g2",
                    "greedy_g3": "results/run/seed1/greedy/expert-greedy_explore/g3",
                },
            ),
            "results/run/seed1/greedy/expert-greedy_explore/g3/recipes/expert-greedy_explore-g3-m2.yaml",
        ),
    ],
)
def test_each_kind_of_model_is_read_and_loaded_from_its_own_place(model, source, location):
    assert LAYOUT.source("seed1", model) == source
    inputs = LAYOUT.model_inputs("seed1", [model])
    assert inputs == {"model_0": source.path, **source.reads}
    assert LAYOUT.model_locations([model], inputs) == [location or source.path]


def test_a_job_of_several_models_reads_each_and_their_recipes_inputs_once():
    models = ["sft-10", "ft-count", "expert-linear"]
    inputs = LAYOUT.model_inputs("seed2", models)
    assert inputs == {
        "model_0": "results/run/seed2/finetune/sft",
        "model_1": "results/run/seed2/finetune/ft-count",
        "model_2": "results/run/seed2/recipes/expert-linear.yaml",
        "expert_arith": "results/run/seed2/finetune/ft-arith",
        "expert_count": "results/run/seed2/finetune/ft-count",
    }
    assert LAYOUT.model_locations(models, inputs) == [
        "results/run/seed2/finetune/sft/step-10",
        "results/run/seed2/finetune/ft-count/step-300",
        "results/run/seed2/recipes/expert-linear.yaml",
    ]


def test_the_base_models_evaluation_is_shared_by_the_seeds_and_patterns_keep_their_wildcards():
    assert LAYOUT.eval_file("seed1", "dev", "base") == "results/run/shared/eval/dev/base.json"
    assert LAYOUT.eval_file("seed1", "test", "sft-10") == "results/run/seed1/eval/test/sft-10.json"
    assert (
        LAYOUT.eval_file("{scope}", "{split}", "{model}") == "results/run/{scope}/eval/{split}/{model}.json"
    )
    assert LAYOUT.finetune_dir("{scope}", "{trainee}") == "results/run/{scope}/finetune/{trainee}"
    assert LAYOUT.expert_locations("seed1") == {
        "ft-arith": "results/run/seed1/finetune/ft-arith/step-300",
        "ft-count": "results/run/seed1/finetune/ft-count/step-300",
    }
