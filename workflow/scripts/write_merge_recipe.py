"""Rules write_merge_recipe, write_merge_point_recipe: the recipe of a merge system's model on a
track, at a point of its grid or at the point chosen on dev (no weights are written)."""

from exme.files import read_json
from exme.merge.recipe import write_recipe
from exme.pipeline.merging import MergeInputs, Source, merge_recipe
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import selected_checkpoints


def track_sources(smk) -> tuple[Source, ...]:
    """The checkpoint track merges the selected checkpoints, the expert track the experts."""
    if smk.wildcards.track == "checkpoint":
        checkpoints = selected_checkpoints(read_json(smk.input.selection), smk.input.checkpoints)
        return tuple(Source(checkpoint.name, checkpoint.path) for checkpoint in checkpoints)
    return tuple(Source(name, folder) for name, folder in smk.params.experts.items())


def main(smk):
    point = smk.wildcards.get("point")
    if "search" in smk.input.keys():  # noqa: SIM118 (Namedlist `in` tests values)
        point = read_json(smk.input.search)["point"]
    inputs = MergeInputs(smk.input.base, track_sources(smk), smk.params.seed)
    recipe = merge_recipe(smk.wildcards.method, smk.wildcards.track, inputs, smk.params.settings, point)
    write_recipe(recipe, smk.output[0])


run_rule(main, snakemake)  # noqa: F821
