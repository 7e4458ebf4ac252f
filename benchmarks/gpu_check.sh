#!/usr/bin/env bash
# GPU check of exme, about 5 minutes on one GPU; run from anywhere on a CUDA machine where the package
# is installed (pip install -e ".[test]" with a CUDA build of torch 2.13.0). Downloads nothing: it trains the
# embedded demo's tiny model. Sections:
#   1. the CI-sized demo pipeline on CUDA, fine-tuning in bf16 (a config override of the CI config);
#   2. the 2-GPU fine-tuning launch command, and where two GPUs exist, a DDP and an FSDP run of it;
#   3. `exme merge --device cuda` against `--device cpu` on the run's ExMe recipe, tensor by tensor;
#   4. every merge method (the mergekit parity tests' recipes) on CUDA against the CPU.
# Findings go to stdout and to $OUT/gpu_check.log ($OUT: an empty folder, default benchmarks/out/gpu_check),
# with the run's scores, benchmarks and logs beside it. Exit status 0 only if every check passed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(mkdir -p "${OUT:-$REPO/benchmarks/out/gpu_check}" && cd "${OUT:-$REPO/benchmarks/out/gpu_check}" && pwd)
PYTHON=${PYTHON:-python}
WORK=$OUT/work
mkdir -p "$WORK"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=$WORK/hf_home
failures=0
section() { printf '\n===== %s =====\n' "$*"; }
check() {  # check NAME COMMAND...: run it, report PASS/FAIL with its wall time, go on either way
  local name=$1 start status=0
  shift
  start=$(date +%s)
  "$@" || status=$?
  if [[ $status -eq 0 ]]; then echo "PASS $name ($(($(date +%s) - start)) s)"
  else echo "FAIL $name (exit $status, $(($(date +%s) - start)) s)"; failures=$((failures + 1)); fi
}

section "machine"
date -u +%FT%TZ
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || true
"$PYTHON" - <<'PY'
import torch, transformers, accelerate
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}")
print(f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}, "
      f"bf16: {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}")
PY
N_GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [[ $N_GPUS -lt 1 ]]; then echo "FAIL no CUDA device visible to torch"; exit 1; fi

section "1. demo pipeline on CUDA, bf16 fine-tuning"
# The CI-sized demo; pretraining, fine-tuning and evaluation ask for a GPU and run on cuda:0 (the
# exme code picks CUDA when present); finetune.bf16 turns on mixed precision.
cat > "$WORK/cuda.yaml" <<'YAML'
run: gpu_check
finetune: {learning_rate: 5.0e-4, max_steps: 60, save_steps: 20, batch_size: 32, warmup_steps: 5,
           lr_scheduler_type: constant_with_warmup, bf16: true}
resources:
  default: {threads: 1, mem_mb: 4000, runtime: 10, gpu: 0}
  pretrain_base: {gpu: 1}
  finetune: {gpu: 1}
  evaluate: {gpu: 1}
YAML
run_pipeline() {
  "$PYTHON" -m snakemake -s "$REPO/Snakefile" -d "$WORK" --cores 8 \
    --configfile "$REPO/.test/config_ci/config.yaml" "$WORK/cuda.yaml" > "$OUT/snakemake.log" 2>&1
}
check "demo pipeline on CUDA (log: snakemake.log)" run_pipeline
RUN=$WORK/results/gpu_check
if [[ -f $RUN/scores.csv ]]; then
  cp "$RUN/scores.csv" "$RUN/summary.md" "$OUT/"
  "$PYTHON" - "$RUN" <<'PY' || echo "(could not summarize the run)"
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
print("seconds per job (Snakemake benchmarks):")
for tsv in sorted(run.glob("benchmarks/**/*.tsv")):
    row = next(csv.DictReader(tsv.open(), delimiter="\t"))
    print(f"  {tsv.relative_to(run / 'benchmarks')}: {float(row['s']):.1f} s, max_rss {row['max_rss']} MB")
state = max(run.glob("finetune_state/*/checkpoint-*/trainer_state.json"),
            key=lambda path: int(path.parent.name.rsplit("-", 1)[1]))
losses = [entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]
print(f"fine-tuning losses (bf16): {losses}")
test = [r for r in csv.DictReader((run / "scores.csv").open()) if r["split"] == "test"]
means = {}
for r in test:
    means.setdefault(r["model"], []).append(float(r["value"]))
print("test means:", {model: round(sum(v) / len(v), 3) for model, v in means.items()})
PY
  grep -h "cuda\|bf16" "$RUN/logs/finetune.log" | head -3 || true
fi

section "2. multi-GPU fine-tuning launch"
"$PYTHON" - "$REPO" <<'PY'
import shlex, sys
from exme.train.launch import launch_command
fsdp = f"{sys.argv[1]}/config/accelerate/fsdp.yaml"
print("2 GPUs, DDP: ", shlex.join(launch_command(2, ["ARGS..."], bf16=True)))
print("2 GPUs, FSDP:", shlex.join(launch_command(2, ["ARGS..."], fsdp_config=fsdp, bf16=True)))
PY
train_on_two_gpus() {  # train_on_two_gpus NAME [FSDP_CONFIG]: 20 steps from the demo's base model
  "$PYTHON" - "$RUN" "$WORK/$1" "${2:-}" <<'PY'
import subprocess, sys
from pathlib import Path
from exme.train.launch import launch_command, training_arguments
run, out, fsdp = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] or None
settings = {"learning_rate": 5e-4, "max_steps": 20, "save_steps": 10, "batch_size": 32, "seed": 0, "bf16": True}
arguments = training_arguments(run / "base", run / "data/sft_train.jsonl", out / "sft", out / "state",
                               threads=2, settings=settings)
subprocess.run(launch_command(2, arguments, fsdp_config=fsdp, bf16=True), check=True)
assert sorted(p.name for p in (out / "sft").iterdir()) == ["step-10", "step-20"], "missing exported steps"
print(f"exported {out / 'sft'}: step-10, step-20")
PY
}
if [[ $N_GPUS -ge 2 && -d $RUN/base ]]; then
  check "2-GPU DDP fine-tuning" train_on_two_gpus ddp
  check "2-GPU FSDP fine-tuning" train_on_two_gpus fsdp "$REPO/config/accelerate/fsdp.yaml"
else
  echo "SKIP 2-GPU runs: $N_GPUS GPU(s) visible (or section 1 left no base model)"
fi

section "3. exme merge on CUDA against the CPU"
compare_merges() {
  (cd "$WORK" && "$PYTHON" -m exme.merge.cli merge results/gpu_check/recipes/exme.yaml "$WORK/merge_cpu" \
    --device cpu --overwrite --no-progress)
  (cd "$WORK" && "$PYTHON" -m exme.merge.cli merge results/gpu_check/recipes/exme.yaml "$WORK/merge_cuda" \
    --device cuda --overwrite --no-progress)
  "$PYTHON" - "$WORK/merge_cpu" "$WORK/merge_cuda" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file
def tensors(folder):
    return {k: v for f in sorted(Path(folder).glob("*.safetensors")) for k, v in load_file(f).items()}
cpu, cuda = tensors(sys.argv[1]), tensors(sys.argv[2])
assert cpu.keys() == cuda.keys(), "different tensor names"
diffs = {name: (cpu[name].float() - cuda[name].float()).abs().max().item() for name in cpu}
identical = sum(diff == 0 for diff in diffs.values())
worst = max(diffs, key=diffs.get)
print(f"{len(diffs)} tensors, {identical} bit-identical; largest difference {diffs[worst]:.3g} ({worst})")
assert diffs[worst] <= 1e-5, "CUDA and CPU merges differ by more than 1e-5"
PY
}
if [[ -f $RUN/recipes/exme.yaml ]]; then
  check "exme merge --device cuda equals --device cpu" compare_merges
else
  echo "FAIL no ExMe recipe from section 1"; failures=$((failures + 1))
fi

section "4. every merge method on CUDA against the CPU"
every_method() {  # the parity tests' recipes on tiny fp32 models (their random drops at density 1)
  (cd "$REPO" && "$PYTHON" - "$WORK/family" <<'PY'
import sys
from pathlib import Path
from exme.merge.execute import build_state_dict
from exme.merge.recipe import recipe_from_dict
from tests.merge.test_mergekit_parity import METHODS, _recipe
from tests.tiny_models import ModelFamily, save_llama
root = Path(sys.argv[1])
base = save_llama(root / "base", 0, num_hidden_layers=2)
family = ModelFamily(base, *(save_llama(root / n, s, base=base, num_hidden_layers=2) for n, s in (("ft_a", 1), ("ft_b", 2))))
failed = []
for method in METHODS:
    recipe = recipe_from_dict({**_recipe(method, family), "dtype": "float32"})
    cpu, cuda = build_state_dict(recipe, device="cpu"), build_state_dict(recipe, device="cuda")
    worst = max((cpu[name] - cuda[name]).abs().max().item() for name in cpu)
    print(f"  {method}: largest difference {worst:.3g}")
    if cpu.keys() != cuda.keys() or worst > 1e-5:
        failed.append(method)
assert not failed, f"CUDA and CPU differ by more than 1e-5: {failed}"
PY
  )
}
check "every merge method on CUDA equals the CPU" every_method

section "summary"
echo "failures: $failures (full log: $OUT/gpu_check.log)"
exit $((failures > 0))
