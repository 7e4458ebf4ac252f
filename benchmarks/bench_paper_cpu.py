"""Wall time and peak memory of the paper's chain on the CPU (config/paper/common.yaml with
config/paper/smollm2-135m-cpu.yaml), each run from scratch in a fresh working directory set up as
an offline site (tests/workflow/paper_cpu.py), and the preflight's own time. Medians over the runs.

    python benchmarks/bench_paper_cpu.py --runs 3
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(workdir: Path) -> dict[str, float]:
    from tests.real_model import converted_model
    from tests.workflow.paper_cpu import RUN, offline_site

    configs, env = offline_site(workdir, converted_model(), with_code_eval=True)
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    command += ["-d", str(workdir), "--cores", "2", "--configfile", str(REPO / "config/config.yaml")]
    command += [*map(str, configs)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    preflight = json.loads((workdir / "results" / RUN / "preflight.json").read_text())["seconds"]
    return {"wall_s": wall, "peak_mb": peak_kb / 1024, "preflight_s": preflight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    runs = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="paper-cpu-") as workdir:
            runs.append(one_run(Path(workdir)))
        print(
            f"run {index + 1}: " + ", ".join(f"{key} {value:.1f}" for key, value in runs[-1].items()),
            flush=True,
        )
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print("median: " + ", ".join(f"{key} {value:.1f}" for key, value in medians.items()))


if __name__ == "__main__":
    main()
