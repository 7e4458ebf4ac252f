#!/usr/bin/env bash
# Post-deploy script of every conda env here (envs/<family>.post-deploy.sh link to it): Snakemake runs
# it once in each new env (`snakemake --sdm conda`) to install this checkout of the exme package,
# editable and without dependencies, which the env file pins (the same pins as pyproject.toml).
# A path in the env file's pip section cannot do it: Snakemake hands conda a copy of the env file in
# .snakemake/conda/, and conda resolves pip paths from there; Snakemake also runs a copy of this
# script, so the Snakefile exports EXME_SOURCE, the repository root.
set -euo pipefail
: "${EXME_SOURCE:?not set: run this through the Snakefile (snakemake --sdm conda)}"
python -m pip install --quiet --no-deps --editable "$EXME_SOURCE"
