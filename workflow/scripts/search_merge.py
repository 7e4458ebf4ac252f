"""Rule search_merge: the grid point of a merge system (a scaling, an M³ draw) with the best dev score."""

from exme.files import write_json
from exme.pipeline.catalogue import match_name
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import best_on_grid, dev_means


def main(smk):
    means = dev_means(smk.input.evaluations)  # in grid order
    curve = {match_name("merge_point", name)["point"]: mean for name, mean in means.items()}
    point = best_on_grid(curve)
    write_json(smk.output[0], {"point": point, "dev_mean": curve[point], "curve": curve})


run_rule(main, snakemake)  # noqa: F821
