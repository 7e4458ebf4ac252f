#!/usr/bin/env bash
# shellcheck disable=SC2317  # the section functions are called through run_section
# The GPU check of exme, one command of at most 9 minutes on one H100 or H200 that has Python 3.12
# and a torch of its own but none of the project's other packages, and no network:
#
#   bash benchmarks/gpu_check.sh OUT_FOLDER [--cpu] [--wheels FOLDER] [--no-install]
#
# Before, where there is network: `benchmarks/gpu_wheels.sh` downloads the wheels into .whl/ (git-
# ignored; about 57 MiB), which travel with the checkout (the device tool: `run` with carry [".whl"],
# command `bash benchmarks/gpu_check.sh $OUT`, timeout_s 600). This script installs them (no index, no
# dependencies resolved: the machine's torch and scientific stack are kept) into a folder of its own
# on PYTHONPATH, then runs, in this order, each section time-boxed and recorded as PASS or FAIL
# whatever the others do:
#   1. FSDP on 1 GPU through the finetune rule's launch path (config/accelerate/fsdp.yaml): save,
#      kill, resume, export;                                      (benchmarks/gpu_check.py fsdp)
#   2. bf16 SFT steps;                                             (gpu_check.py sft)
#   3. a recipe model's logits on CUDA against the merged folder's; (gpu_check.py logits)
#   4. every merge method on CUDA against the CPU, DARE/DELLA masks equal; (gpu_check.py methods)
#   5. SE-Merging's peak memory against the static merge's, a random ~1B GQA Llama in bf16;
#   6. the CI config (.test/config_ci) end to end, fine-tuning and evaluation on the GPU, bf16.
# OUT_FOLDER gets summary.md (a table of the sections and their figures) and gpu_check.log (all
# output); the runs themselves go to WORK (default /tmp/exme_gpu_check). Exit status: the number of
# failed sections. `--cpu` runs the same sections on the CPU (FSDP's becomes the single-process
# launch path; SE-Merging's uses tiny models; the CI pipeline is skipped unless --with-pipeline),
# a rehearsal that needs no GPU; `--no-install` uses the packages already installed.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: gpu_check.sh OUT_FOLDER [--cpu] [--wheels FOLDER] [--no-install] [--with-pipeline]}
shift
DEVICE=cuda WHEELS=$REPO/.whl INSTALL=1 PIPELINE=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --cpu) DEVICE=cpu PIPELINE=0 SCALE=${SCALE:-6} ;;
    --wheels) WHEELS=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --with-pipeline) PIPELINE=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/exme_gpu_check}
SCALE=${SCALE:-1}  # the time boxes' factor (--cpu: 6, a rehearsal on a slower machine)
BUDGET=$((${BUDGET:-540} * SCALE))  # seconds for everything: each section its box or what is left
mkdir -p "$OUT" "$WORK" || exit 2
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.md
exec > >(tee "$OUT/gpu_check.log") 2>&1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=$WORK/hf_home
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=$WORK/site  # the carried wheels' packages, after the checkout's and ahead of the machine's
export PYTHONPATH=$REPO/src:$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$PATH
export PYTHON REPO WORK DEVICE OUT WHEELS SITE
START=$(date +%s)
failures=0

{
  echo "# exme GPU check, $(date -u +%FT%TZ), device $DEVICE"
  echo
  echo "| section | result | seconds | figures |"
  echo "|---|---|---|---|"
} >"$SUMMARY"

# run_section NAME BOX_SECONDS COMMAND...: run it under a time limit, record PASS/FAIL, its time and
# its RESULT line (figures) in the summary; never stops the script.
run_section() {
  local name=$1 box=$(($2 * SCALE)) status=0 start log left figures
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  ((box > left)) && box=$left
  printf '\n===== %s (at most %s s) =====\n' "$name" "$box"
  if ((box < 5)); then
    echo "SKIP $name: the time budget is spent"
    echo "| $name | SKIP (no time left) | 0 | |" >>"$SUMMARY"
    failures=$((failures + 1))
    return
  fi
  start=$(date +%s)
  log=$WORK/$name.log
  timeout --kill-after=10 "$box" bash -c '"$@"' "$name" "$@" >"$log" 2>&1 || status=$?
  tail -n 25 "$log"
  figures=$(grep '^RESULT ' "$log" | tail -n 1 | cut -c8- | tr '|' '/')
  if ((status == 0)); then
    result=PASS
  elif ((status == 124 || status == 137)); then
    result="FAIL (timed out)"
  else
    result="FAIL (exit $status)"
  fi
  [[ $result == PASS ]] || failures=$((failures + 1))
  echo "$result $name ($(($(date +%s) - start)) s)"
  echo "| $name | $result | $(($(date +%s) - start)) | ${figures:-see gpu_check.log} |" >>"$SUMMARY"
}

section_python() { "$PYTHON" "$REPO/benchmarks/gpu_check.py" "$1" "$WORK" --device "$DEVICE"; }

install_wheels() {  # the carried wheels, into SITE
  ls "$WHEELS"/*.whl >/dev/null || { echo "no wheels in $WHEELS: run benchmarks/gpu_wheels.sh"; return 1; }
  "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
  # the project's own pins against what is importable now (the machine's versions where not carried)
  "$PYTHON" - "$REPO/pyproject.toml" <<'PY'
import re, sys, tomllib
from importlib.metadata import PackageNotFoundError, version
missing = []
for requirement in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    name, pin = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(.*)", requirement).groups()
    try:
        found = version(name)
    except PackageNotFoundError:
        found = None
        missing.append(name)
    print(f"  {name} {pin or '(any)'}: {found or 'MISSING'}")
print("RESULT " + ("missing: " + ", ".join(missing) if missing else "every dependency importable"))
sys.exit(1 if missing else 0)
PY
}

machine() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$PYTHON" - "$DEVICE" <<'PY'
import sys, torch, transformers, accelerate
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"RESULT torch {torch.__version__} CUDA {torch.version.cuda}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, GPU {gpu}")
sys.exit(sys.argv[1] == "cuda" and not torch.cuda.is_available())
PY
}

ci_pipeline() {  # the CI config with fine-tuning (bf16), pretraining and evaluation on the GPU
  local config=$WORK/gpu.yaml run=$WORK/pipeline/results/gpu_check
  cat >"$config" <<YAML
run: gpu_check
finetune: {bf16: $([[ $DEVICE == cuda ]] && echo true || echo false)}
resources:
  default: {threads: 1, mem_mb: 4000, runtime: 10, gpu: 0}  # 16 jobs at once on 16 cores
  pretrain_base: {gpu: 1}
  finetune: {gpu: 1}
  evaluate: {gpu: 1}
YAML
  mkdir -p "$WORK/pipeline"
  "$PYTHON" -m snakemake -s "$REPO/Snakefile" -d "$WORK/pipeline" --cores 16 --scheduler greedy \
    --configfile "$REPO/.test/config_ci/config.yaml" "$config" || return 1
  cp "$run/seed0/summary.md" "$OUT/pipeline_summary.md" || return 1
  "$PYTHON" - "$run" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
seconds = {}  # per rule (the folder or file under a benchmarks/ folder), summed over its jobs
for tsv in run.glob("**/benchmarks/**/*.tsv"):
    parts = tsv.relative_to(run).with_suffix("").parts
    rule = parts[parts.index("benchmarks") + 1]
    seconds[rule] = round(seconds.get(rule, 0) + float(next(csv.DictReader(tsv.open(), delimiter="\t"))["s"]), 1)
test = [r for r in csv.DictReader((run / "seed0" / "scores.csv").open()) if r["split"] == "test"]
print("RESULT " + json.dumps({"job_seconds": seconds, "test_rows": len(test)}))
PY
}

export -f section_python install_wheels machine ci_pipeline
printf '===== exme GPU check: %s, device %s, work %s =====\n' "$(date -u +%FT%TZ)" "$DEVICE" "$WORK"
if ((INSTALL)); then run_section install 90 install_wheels; fi
run_section machine 30 machine
run_section fsdp_kill_resume 100 section_python fsdp
run_section sft_bf16 45 section_python sft
run_section recipe_logits 45 section_python logits
run_section merge_methods 60 section_python methods
run_section se_merging_memory 150 section_python se_memory
if ((PIPELINE)); then
  run_section ci_pipeline 240 ci_pipeline
else
  echo "| ci_pipeline | SKIP (--cpu) | 0 | |" >>"$SUMMARY"
fi
{
  echo
  echo "failed sections: $failures; total $(($(date +%s) - START)) s; logs: gpu_check.log, $WORK/*.log"
} >>"$SUMMARY"
printf '\n===== summary =====\n'
cat "$SUMMARY"
exit "$failures"
