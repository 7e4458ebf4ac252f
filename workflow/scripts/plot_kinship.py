"""Rule plot_kinship: the kinship table and heatmap of a track's models, kinship against merge
gain over all pairwise merges, and the best dev score per greedy generation."""

import pandas as pd

from exme.files import read_json, write_text
from exme.pipeline.greedy import Pool
from exme.pipeline.greedy_steps import file_name
from exme.pipeline.kinship_report import (
    gain_markdown,
    greedy_markdown,
    kinship_table,
    merge_gains,
    plot_gain,
    plot_greedy,
    plot_heatmap,
)
from exme.pipeline.rule_script import run_rule


def main(smk):
    track, metric = smk.wildcards.track, smk.params.metric
    scores = pd.read_csv(smk.input.scores)
    dev = scores[(scores["seed"] == smk.params.seed) & (scores["split"] == "dev")]
    dev_means = dev.groupby("model")["value"].mean()
    matrix = read_json(smk.input.kinship)
    tables = {name: kinship_table(matrix, name) for name in matrix["values"]}
    sections = [f"## {name}\n\n{table.to_markdown(floatfmt='.4f')}" for name, table in tables.items()]
    plot_heatmap(tables[metric], metric, smk.output.heatmap)
    pairs = Pool.from_dict(read_json(f"{smk.input.pairs}/pool.json")["next"])
    merges = {file_name(track, "greedy", m.name): m.parents for m in pairs.models if m.parents}
    gains = merge_gains(dev_means, merges)
    kinships = pd.Series({merge: tables[metric].loc[a, b] for merge, (a, b) in merges.items()})
    plot_gain(kinships, gains, metric, smk.output.gain)
    pools = {
        variant: Pool.from_dict(read_json(path))
        for variant, path in zip(smk.params.variants, smk.input.pools, strict=True)
    }
    plot_greedy(pools, smk.output.greedy)
    sections += [gain_markdown(kinships, gains, merges, metric), greedy_markdown(pools)]
    write_text(smk.output.table, "\n\n".join(sections) + "\n")


run_rule(main, snakemake)  # noqa: F821
