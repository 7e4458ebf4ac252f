"""What the Snakemake workflow needs: config checks, the model catalogue, targets, recipes, selection,
scores and the report. It may import every other part of exme; only the Snakefile and the rule
scripts import it. The modules the Snakefile imports while building the DAG (config, catalogue,
targets) do not import torch, so a dry run stays fast."""
