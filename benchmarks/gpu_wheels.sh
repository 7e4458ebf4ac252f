#!/usr/bin/env bash
# Downloads the wheels that benchmarks/gpu_check.sh installs on a GPU machine without network: the
# project's dependencies (pyproject.toml) for CPython 3.12 on Linux x86-64, resolved here, except
# torch (the machine's own is kept), the packages such machines' images hold (PROVIDED below:
# torch's own dependencies and the large scientific stack, used in the machine's versions) and PuLP
# (16 MiB of solver binaries: Snakemake imports it only for its ILP scheduler; gpu_check.sh runs the
# greedy one). Together with the checkout they must stay under the device tool's 64 MiB.
# Packages published only as source are built here into pure-Python wheels.
#
#   benchmarks/gpu_wheels.sh [FOLDER]     # default: .whl/ in the checkout (git-ignored)
#
# Needs pip >= 22.2 (PYTHON, default python3) and access to PyPI. Replaces the folder's wheels, so
# that it holds one version of each package; prints their count, size and the time taken.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$REPO/.whl}
PYTHON=${PYTHON:-python3}
PROVIDED='torch|triton|nvidia-.*|cuda-.*|sympy|mpmath|networkx|jinja2|markupsafe|filelock|fsspec'
PROVIDED+='|typing-extensions|setuptools|numpy|scipy|pandas|pyarrow|scikit-learn|matplotlib'
PROVIDED+='|contourpy|fonttools|kiwisolver|cycler|pyparsing|pillow|lxml|python-dateutil|six'
PROVIDED+='|pulp'
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
  manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64)

start=$(date +%s)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$DEST" && rm -f "$DEST"/*.whl

# The dependency closure (what `pip install` of the project would install, torch excluded).
"$PYTHON" - "$REPO/pyproject.toml" >"$scratch/requirements.txt" <<'PY' || exit 1
import re, sys, tomllib
dependencies = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in dependencies if re.split(r"[\[=<>~! ]", d)[0] != "torch"))
PY
"$PYTHON" -m pip install --quiet --dry-run --ignore-installed --report "$scratch/report.json" \
  -r "$scratch/requirements.txt" || { echo "could not resolve the dependencies" >&2; exit 1; }
"$PYTHON" - "$scratch" "$PROVIDED" <<'PY' || exit 1
import json, re, sys
scratch, provided = sys.argv[1], re.compile(f"^({sys.argv[2]})$")
wheels, sources = [], []
for item in json.load(open(f"{scratch}/report.json"))["install"]:
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
    if provided.match(name):
        continue
    pinned = f"{name}=={item['metadata']['version']}"
    (wheels if item["download_info"]["url"].endswith(".whl") else sources).append(pinned)
open(f"{scratch}/wheels.txt", "w").write("\n".join(wheels) + "\n")
open(f"{scratch}/sources.txt", "w").write("\n".join(sources) + "\n")
PY

platform_options=()
for platform in "${PLATFORMS[@]}"; do platform_options+=(--platform "$platform"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platform_options[@]}" -d "$DEST" -r "$scratch/wheels.txt" || { echo "download failed" >&2; exit 1; }
if [[ -s $scratch/sources.txt ]]; then
  "$PYTHON" -m pip wheel --quiet --no-deps -w "$scratch/built" -r "$scratch/sources.txt" || exit 1
  for wheel in "$scratch"/built/*.whl; do
    [[ $wheel == *-none-any.whl ]] || { echo "$(basename "$wheel") is not pure Python" >&2; exit 1; }
    mv "$wheel" "$DEST/"
  done
fi
count=$(find "$DEST" -maxdepth 1 -name '*.whl' | wc -l)
echo "$count wheels, $(du -sm "$DEST" | cut -f1) MiB in $DEST, $(($(date +%s) - start)) s"
