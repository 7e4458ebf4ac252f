"""Rule kinship_matrix: Pearson, cosine and Euclidean kinship of every pair of a track's models,
streamed through the merge engine's reader."""

from exme.device import use_threads
from exme.files import write_json
from exme.merge.kinship import METRICS, kinship_matrix
from exme.pipeline.rule_script import run_rule


def main(smk):
    use_threads(smk.threads)
    names, folders = list(smk.params.experts), list(smk.params.experts.values())
    pairs = kinship_matrix(folders, smk.input.base)
    by_name = dict(zip(folders, names, strict=True))
    # A model is its own closest kin: correlation and cosine 1, distance 0.
    itself = {"pcc": 1.0, "cos": 1.0, "ed": 0.0}
    values = {
        metric: [[itself[metric] if i == j else None for j in names] for i in names] for metric in METRICS
    }
    for (a, b), result in pairs.items():
        i, j = names.index(by_name[a]), names.index(by_name[b])
        for metric, value in result.to_dict().items():
            values[metric][i][j] = values[metric][j][i] = value
    write_json(smk.output[0], {"models": names, "values": values})


run_rule(main, snakemake)  # noqa: F821
