"""Running the pipeline's Snakemake CLI in a scratch working directory, as a user would."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REAL_CONFIG = REPO / ".test/config_real/config.yaml"
# Every config that runs in a bare working directory; REAL_CONFIG needs a prepared one (the real
# model), see test_real_model_run.py.
CONFIGS = sorted(
    path
    for path in [*REPO.glob("config/*.yaml"), *REPO.glob(".test/config_*/config.yaml")]
    if path != REAL_CONFIG
)
CI_CONFIG = REPO / ".test/config_ci/config.yaml"


def run_snakemake(
    workdir: Path, configfile: Path | list[Path], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Snakemake in `workdir` with the given config file(s), with `env` over this environment."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    # As from the repository root, where the Snakefile's `configfile:` is found: the given files are
    # merged over config/config.yaml (so an overlay such as config/demo_seeds.yaml works).
    configfiles = [configfile] if isinstance(configfile, Path) else configfile
    command += ["--configfile", str(REPO / "config/config.yaml"), *map(str, configfiles)]
    command += ["--cores", "2", *args]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environment)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: job count} from a dry run's 'Job stats' table (empty when nothing is to be done)."""
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    jobs = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"([\w-]+)\s+(\d+)", line.strip())
        if not match:
            break
        jobs[match[1]] = int(match[2])
    return jobs
