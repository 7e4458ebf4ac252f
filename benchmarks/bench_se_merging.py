"""Benchmark: inference cost of SE-Merging against the static task-arithmetic merge.

Both models answer the same fixed request set (8 prompts × 4 continuations of `loglikelihood`, and
the 8 prompts with greedy `generate_until`, at most 16 new tokens). Each model is loaded and run in
its own subprocess, `--runs` times, alternating, both held in `--dtype`; the table gives the median
time per item of each request type, the median peak memory of the subprocess (its peak RSS on the
CPU, CUDA's peak allocation on a GPU) and the bytes of parameters held (SE-Merging: the working
weights, the base and the K task vectors), then SE-Merging's peak memory over the static merge's.

    python benchmarks/bench_se_merging.py --base BASE --experts A B [--coefficients 0.5] [--runs 3]
    python benchmarks/bench_se_merging.py --tiny      # writes tiny random models first (a smoke run)
    python benchmarks/bench_se_merging.py --random 1b --dtype bfloat16 --device cuda
        # a ~1B Llama with grouped-query attention, built randomly from a config (no download)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = [
    "Question: what is 12 plus 7?\nAnswer:",
    "Question: how many letters are in the word merge?\nAnswer:",
    "Translate to French: the cat sleeps.\n",
    "The capital of Italy is",
    "def add(a, b):\n    return",
    "Question: what comes after Monday?\nAnswer:",
    "Sort the numbers 5 3 9 1:",
    "A model merge combines",
]
CONTINUATIONS = [" yes", " no", " 19", " Rome"]
MAX_NEW_TOKENS = 16


def requests():
    from lm_eval.api.instance import Instance

    pairs = [(prompt, continuation) for prompt in PROMPTS for continuation in CONTINUATIONS]
    loglikelihood = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    greedy = {"until": ["\n\n"], "max_gen_toks": MAX_NEW_TOKENS, "do_sample": False}
    generation = [Instance("generate_until", {}, (p, dict(greedy)), i) for i, p in enumerate(PROMPTS)]
    return loglikelihood, generation


def worker(args: argparse.Namespace) -> None:
    """Load one model, run the requests once, print the cost as JSON on the last line."""
    import torch

    from exme.device import use_threads
    from exme.evaluate.se_merging import SEMergingLM, measure_inference_cost, static_merge_lm

    use_threads(args.threads)
    torch.manual_seed(0)
    common = {
        "tokenizer": args.tokenizer,
        "device": args.device,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
    }
    if args.worker == "static":
        lm = static_merge_lm(args.base, args.experts, args.coefficients, **common)
    else:
        lm = SEMergingLM(
            args.base,
            args.experts,
            args.coefficients,
            layer=args.layer,
            temperature=args.temperature,
            similarity=args.similarity,
            **common,
        )
    cost = measure_inference_cost(lm, *requests())
    if isinstance(lm, SEMergingLM):
        cost["weight_switches"] = lm.weight_switches
    print(json.dumps(cost))


# Llama shapes of the random models: a tiny one (a smoke run) and ~1B parameters with grouped-query
# attention (Llama-3.2-1B's layer shapes, 4 query heads per key-value head; a character vocabulary).
RANDOM_MODELS = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_key_value_heads": 4, "num_hidden_layers": 2},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
           "num_key_value_heads": 8, "num_hidden_layers": 16},
}  # fmt: skip


def write_random_models(root: Path, size: str, dtype: str) -> tuple[Path, list[Path]]:
    """A random Llama of RANDOM_MODELS[size] with a character tokenizer, and two perturbed copies as
    experts, saved in `dtype` (float32 for "auto")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from exme.demo.base_model import build_tokenizer

    tokenizer = build_tokenizer(PROMPTS + CONTINUATIONS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        tie_word_embeddings=False,
        **RANDOM_MODELS[size],
    )
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    saved = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    paths = [root / name for name in ("base", "expert_a", "expert_b")]
    base.to(saved).save_pretrained(paths[0])
    for seed, path in enumerate(paths[1:], start=1):
        generator = torch.Generator().manual_seed(seed)
        expert = {
            name: (tensor.float() + 0.01 * torch.randn(tensor.shape, generator=generator)).to(saved)
            for name, tensor in base.state_dict().items()
        }
        base.save_pretrained(path, state_dict=expert)
    tokenizer.save_pretrained(paths[0])
    return paths[0], paths[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base", type=Path)
    parser.add_argument("--experts", type=Path, nargs="+")
    parser.add_argument("--tokenizer", type=Path, help="default: the base folder")
    parser.add_argument("--coefficients", type=float, nargs="+", default=[0.5])
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--similarity", default="cosine")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32", help="both models' dtype (auto: the base's own)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--random", choices=RANDOM_MODELS, help="benchmark random models of this size")
    parser.add_argument("--tiny", dest="random", action="store_const", const="tiny", help="--random tiny")
    parser.add_argument("--worker", choices=["static", "se"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.random:
            args.base, args.experts = write_random_models(Path(scratch), args.random, args.dtype)
        if args.base is None or not args.experts:
            parser.error("give --base and --experts, or --random")
        run(args)


def run(args: argparse.Namespace) -> None:
    command = [sys.executable, __file__, "--base", str(args.base), "--experts", *map(str, args.experts)]
    command += ["--coefficients", *map(str, args.coefficients), "--layer", str(args.layer)]
    command += ["--temperature", str(args.temperature), "--similarity", args.similarity]
    command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads), "--dtype", args.dtype]
    command += ["--tokenizer", str(args.tokenizer)] if args.tokenizer else []
    command += ["--device", args.device] if args.device else []
    results: dict[str, list[dict]] = {"static": [], "se": []}
    for _ in range(args.runs):
        for kind in results:
            done = subprocess.run([*command, "--worker", kind], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{kind} worker failed:\n{done.stderr[-3000:]}")
            results[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))

    def median(kind: str, key: str) -> float:
        return statistics.median(result[key] for result in results[kind])

    n_ll, n_gen = len(PROMPTS) * len(CONTINUATIONS), len(PROMPTS)
    print(f"{n_ll} loglikelihood and {n_gen} generate_until requests; medians of {args.runs} runs\n")
    print("| model | loglikelihood, ms/item | generate_until, ms/item | peak memory | parameters held |")
    print("|---|---|---|---|---|")
    for kind, label in (("static", "static merge"), ("se", "SE-Merging")):
        memory_kind = results[kind][0]["peak_memory_kind"].replace("_", " ")
        print(
            f"| {label} | {1000 * median(kind, 'loglikelihood_s_per_item'):.1f} "
            f"| {1000 * median(kind, 'generate_until_s_per_item'):.1f} "
            f"| {median(kind, 'peak_memory_bytes') / 2**20:.0f} MiB ({memory_kind}) "
            f"| {median(kind, 'held_parameter_bytes') / 2**20:.2f} MiB |"
        )
    ratio = median("se", "loglikelihood_s_per_item") / median("static", "loglikelihood_s_per_item")
    gen_ratio = median("se", "generate_until_s_per_item") / median("static", "generate_until_s_per_item")
    print(f"\nSE-Merging / static time: loglikelihood {ratio:.1f}x, generate_until {gen_ratio:.1f}x")
    held = median("se", "held_parameter_bytes") / median("static", "held_parameter_bytes")
    peak = median("se", "peak_memory_bytes") / median("static", "peak_memory_bytes")
    k = len(args.experts)
    print(f"SE-Merging / static memory: parameters held {held:.2f}x (2 + K = {2 + k}), peak {peak:.2f}x")
    switches = results["se"][0]["weight_switches"]
    print(f"weight settings per SE-Merging run: {switches} (the initial static one included)")


if __name__ == "__main__":
    main()
