"""The checks of benchmarks/gpu_check.sh, one subcommand per section, each on tiny models it builds
itself (no download): `python3 benchmarks/gpu_check.py SECTION WORK --device cuda`. Each prints its
figures as one line starting with RESULT, and exits non-zero if its check fails. With `--device cpu`
the same code runs on the CPU (the FSDP section then runs the single-process launch path), so that
the script is exercised before a GPU runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' tiny models and recipes

# A Llama of the demo's kind, large enough to shard its decoder layers under FSDP.
TINY_MODEL = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
}
SFT = {"learning_rate": 5e-4, "batch_size": 16, "seed": 0, "warmup_steps": 2}
# The first run is killed once checkpoint-SAVE_STEPS is written, well before MAX_STEPS on any device.
SAVE_STEPS, MAX_STEPS = 20, 60
MERGE_TOLERANCE = 1e-5  # largest |CUDA − CPU| of an fp32 merge


def result(**figures) -> None:
    print("RESULT " + json.dumps(figures, sort_keys=True), flush=True)


def demo(work: Path, device: str) -> tuple[Path, Path]:
    """The demo's data and a briefly pretrained tiny base (built once per work folder)."""
    from exme.demo.base_model import pretrain_base
    from exme.demo.tasks import TASK_GENERATORS, write_demo_data

    data, base = work / "data", work / "base"
    if not (data / "sft_train.jsonl").is_file():
        tasks = list(TASK_GENERATORS)
        write_demo_data(data, tasks, n_train=200, n_dev=8, n_test=8, seed=1, pretrain_lines=300)
    if not (base / "config.json").is_file():
        pretrain_base(
            base, data / "pretrain.txt", **TINY_MODEL, steps=5, learning_rate=1e-3, batch_size=8,
            seq_len=32, seed=0, device=device,
        )  # fmt: skip
    return data / "sft_train.jsonl", base


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill a launcher and every process below it, as a node failure does: torchrun starts its
    workers in sessions of their own, out of reach of a process-group kill."""
    import psutil

    parent = psutil.Process(process.pid)
    for child in parent.children(recursive=True):
        child.kill()
    parent.kill()
    process.wait()


def fsdp(work: Path, device: str) -> None:
    """Fine-tuning through the finetune rule's launch path (on CUDA: accelerate with
    config/accelerate/fsdp.yaml on the one GPU), killed once its first checkpoint is written, rerun to
    the end; the rerun must resume from that checkpoint and export every step, one model copy each."""
    from exme.train.launch import launch_command, training_arguments

    train, base = demo(work, device)
    shutil.rmtree(work / "fsdp", ignore_errors=True)  # a run of its own, also when the check is rerun
    out, state = work / "fsdp" / "sft", work / "fsdp" / "state"
    settings = {**SFT, "max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "device": device}
    if device == "cuda":
        settings["bf16"] = True
    arguments = training_arguments(base, train, out, state, threads=2, settings=settings)
    if device == "cuda":  # the rule's FSDP command, on one process
        command = launch_command(2, arguments, fsdp_config=REPO / "config/accelerate/fsdp.yaml", bf16=True)
        command[command.index("--num_processes") + 1] = "1"
    else:
        command = launch_command(1, arguments)
    print(" ".join(map(str, command)), flush=True)
    first = state / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json"
    start = time.perf_counter()
    with open(work / "fsdp_first.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while not first.is_file() and process.poll() is None:
            time.sleep(0.05)
        killed_after = time.perf_counter() - start
        finished_first = process.poll() is not None
        _kill_tree(process)
    if not first.is_file():
        sys.exit(f"no checkpoint-{SAVE_STEPS} before the run ended: see {work / 'fsdp_first.log'}")
    stamp = first.stat().st_mtime_ns
    rerun = subprocess.run(command, capture_output=True, text=True)
    print(rerun.stdout[-2000:], rerun.stderr[-4000:], sep="\n")
    exported = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    weight_files = (".bin", ".safetensors", ".pt")
    weights = {
        step: sorted(p.name for p in (out / step).iterdir() if p.suffix in weight_files) for step in exported
    }
    result(
        killed_after_s=round(killed_after, 1), finished_before_kill=finished_first,
        rerun_exit=rerun.returncode, resumed=first.is_file() and first.stat().st_mtime_ns == stamp,
        exported=exported, weights=weights, total_s=round(time.perf_counter() - start, 1),
    )  # fmt: skip
    expected = [f"step-{step}" for step in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS)]
    one_copy = all(files == ["model.safetensors"] for files in weights.values())
    resumed = first.stat().st_mtime_ns == stamp
    if rerun.returncode or finished_first or exported != expected or not one_copy or not resumed:
        sys.exit("FSDP save/kill/resume/export failed (see RESULT)")


def sft(work: Path, device: str) -> None:
    """A few SFT steps in-process, bf16 mixed precision on CUDA: finite, falling losses."""
    from exme.train.sft import finetune

    train, base = demo(work, device)
    shutil.rmtree(work / "sft", ignore_errors=True)
    state = work / "sft" / "state"
    settings = {**SFT, "device": device, **({"bf16": True} if device == "cuda" else {})}
    start = time.perf_counter()
    finetune(base, train, work / "sft" / "out", state, max_steps=20, save_steps=20, **settings)
    seconds = time.perf_counter() - start
    history = json.loads((state / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    losses = [round(entry["loss"], 4) for entry in history if "loss" in entry]
    result(losses=losses, seconds=round(seconds, 1), bf16=settings.get("bf16", False))
    if not losses or not all(map(math.isfinite, losses)) or losses[-1] >= losses[0]:
        sys.exit("SFT losses are not finite and falling")


def _family(work: Path):
    from tests.tiny_models import ModelFamily, save_llama

    root = work / "family"
    if (root / "ft_b" / "config.json").is_file():
        return ModelFamily(root / "base", root / "ft_a", root / "ft_b")
    from exme.demo.base_model import build_tokenizer

    base = save_llama(root / "base", 0, num_hidden_layers=2)
    build_tokenizer(["abcdefghijklmnopqrstuvwxyz 0123456789"]).save_pretrained(base)  # for load_model
    tuned = [
        save_llama(root / name, seed, base=base, num_hidden_layers=2)
        for name, seed in (("ft_a", 1), ("ft_b", 2))
    ]
    return ModelFamily(base, *tuned)


def logits(work: Path, device: str) -> None:
    """A recipe's model built on the device by the merge engine against the folder `exme merge`
    writes, both evaluated on the device: the same logits."""
    import torch
    import yaml

    from exme.evaluate.models import load_model

    family = _family(work)
    experts = (family.ft_a, family.ft_b)
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "ties", "base_model": str(family.base), "dtype": "float32",
        "parameters": {"density": 0.5},
        "models": [{"model": str(path), "parameters": {"weight": 0.7}} for path in experts],
    }))  # fmt: skip
    merged = work / "merged"
    command = [sys.executable, "-m", "exme.merge.cli", "merge", str(recipe), str(merged), "--device", "cpu"]
    subprocess.run([*command, "--overwrite", "--no-progress"], check=True)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0)).to(device)
    outputs = {}
    for name, source in (("recipe", recipe), ("folder", merged)):
        model, _ = load_model(source, device=torch.device(device), dtype="float32")
        with torch.no_grad():
            outputs[name] = model(ids).logits.float().cpu()
    difference = (outputs["recipe"] - outputs["folder"]).abs().max().item()
    result(largest_logit_difference=difference, device=device)
    if difference > 1e-4:
        sys.exit("the recipe's logits differ from the merged folder's by more than 1e-4")


def methods(work: Path, device: str) -> None:
    """Every merge method (the mergekit parity tests' recipes, fp32) on the device against the CPU,
    and the DARE and DELLA masks (density 0.5, seeded) equal to those recorded on the CPU."""
    from exme.merge.execute import build_state_dict
    from exme.merge.recipe import recipe_from_dict
    from tests.merge.test_dare import CPU_MASKS, _digest, _kept_masks
    from tests.merge.test_mergekit_parity import METHODS, _recipe

    family = _family(work)
    differences, failed = {}, []
    for method in METHODS:
        recipe = recipe_from_dict({**_recipe(method, family), "dtype": "float32"})
        cpu, other = build_state_dict(recipe, device="cpu"), build_state_dict(recipe, device=device)
        worst = max((cpu[name] - other[name].cpu()).abs().max().item() for name in cpu)
        differences[method] = float(f"{worst:.3g}")
        if cpu.keys() != other.keys() or worst > MERGE_TOLERANCE:
            failed.append(method)
    masks = {
        method: _digest(_kept_masks(family, method, device)) == CPU_MASKS[method] for method in CPU_MASKS
    }
    result(largest_difference=differences, masks_equal_recorded=masks, failed=failed)
    if failed or not all(masks.values()):
        sys.exit(f"{device} and the CPU differ: {failed}, masks {masks}")


def se_memory(work: Path, device: str) -> None:
    """SE-Merging's peak memory against the static merge's: a ~1B GQA Llama on CUDA, tiny on the CPU."""
    size, dtype = ("1b", "bfloat16") if device == "cuda" else ("tiny", "float32")
    command = [sys.executable, str(REPO / "benchmarks/bench_se_merging.py"), "--random", size]
    command += ["--dtype", dtype, "--device", device, "--runs", "1", "--threads", "4"]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout, done.stderr[-3000:], sep="\n")
    table = ("| static", "| SE", "SE-Merging /")
    lines = [line for line in done.stdout.splitlines() if line.startswith(table)]
    result(model=size, dtype=dtype, table=lines)
    if done.returncode:
        sys.exit("bench_se_merging.py failed")


SECTIONS = {"fsdp": fsdp, "sft": sft, "logits": logits, "methods": methods, "se_memory": se_memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("work", type=Path, help="a folder for the section's models and runs")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    SECTIONS[args.section](args.work, args.device)


if __name__ == "__main__":
    main()
