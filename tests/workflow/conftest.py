"""The one local run of the CI-sized config that the workflow tests share."""

import pytest

from tests.workflow.snakemake_runner import CI_CONFIG, run_snakemake


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """One full local run of the CI-sized demo; later tests read its outputs, rerun from it, and
    compare a Slurm run's scores with it."""
    workdir = tmp_path_factory.mktemp("ci_run")
    result = run_snakemake(workdir, CI_CONFIG)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir
