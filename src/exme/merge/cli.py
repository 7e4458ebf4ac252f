"""The `exme` command line: `exme merge CONFIG.yml OUT_DIR`, `exme kinship A B --base BASE`,
`exme methods`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from exme import __version__
from exme.errors import ExmeError
from exme.process_exit import exit_without_teardown

# Bytes of input weights the kernel is asked to read ahead while Python imports torch: enough to
# cover the import on a small merge, little enough not to churn the page cache on a huge one.
_STARTUP_READAHEAD_BYTES = 2**30
# Linux caps one POSIX_FADV_WILLNEED call at the device's read-ahead window (often 8 MB; one
# call for a whole file then reads only its first window), so the advice is given in chunks.
_READAHEAD_CHUNK_BYTES = 8 * 2**20
# mergekit's sizes: a count with K, M or B (thousand, million, billion) bytes; "5B" is 5 GB.
_MERGEKIT_SIZE = re.compile(r"\s*(\d+)\s*([kKmMbB])\s*")
_MERGEKIT_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9}
_SMALLEST_SHARD_BYTES = 10**6
# mergekit-yaml's options (mergekit.options.MergeOptions) that tune its own executor, or that exme
# does anyway: accepted, with their --no- forms, to no effect. exme merges a LoRA adapter in as it
# reads the weights, so keeps no merged copy (--lora-merge-cache).
_MERGEKIT_NO_OP_FLAGS = ("--lazy-unpickle", "--low-cpu-memory", "--read-to-gpu", "--multi-gpu",
                         "--async-write", "--clone-tensors", "--trust-remote-code")  # fmt: skip
_MERGEKIT_NO_OP_OPTIONS = (("-j", "--num-threads"), ("--write-threads",), ("--lora-merge-cache",))
# mergekit-yaml's options that would change the output in ways exme does not: refused by name.
_MERGEKIT_REFUSED = {
    "unsafe_truncate_embeddings": "--unsafe-truncate-embeddings is not supported: merge models of "
    "different vocabularies with tokenizer_source: union or a tokenizer section",
    "lora_merge_dtype": "--lora-merge-dtype is not supported: exme adds a LoRA's update to the "
    "weights in float32 and rounds the sum to the weights' dtype",
    "no_safe_serialization": "--no-safe-serialization is not supported: exme writes safetensors only",
}
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def _methods_text() -> str:
    from exme.merge.methods.registry import BasePolicy, registered_methods

    base_text = {
        BasePolicy.REQUIRED: "needs base_model",
        BasePolicy.OPTIONAL: "base_model optional",
        BasePolicy.IGNORED: "no base",
    }
    lines = []
    for method in registered_methods():
        lines.append(f"  {method.name}  ({method.pretty_name}; {base_text[method.base]})")
        for parameter in method.parameters:
            default = "required" if parameter.required else f"default {parameter.default}"
            bounds = f" in {parameter.range}" if parameter.range else ""
            lines.append(
                f"      {parameter.name}: {parameter.type.__name__}{bounds}, "
                f"{parameter.scope.value.replace('_', '-')}, {default}"
            )
    return "\n".join(lines)


def _start_reading_inputs(config: str) -> None:
    """Let the disk work during start-up: importing torch takes a noticeable time, which on a small
    merge would otherwise come on top of reading the inputs. Errors are left to the recipe loader."""
    import yaml

    try:
        folders = []
        for recipe in yaml.safe_load_all(Path(config).read_text()):  # a multi-document one's merges too
            folders.append(recipe.get("base_model"))
            for part in [recipe, *(recipe.get("modules") or {}).values()]:  # part: models or slices
                sources = [s for piece in part.get("slices") or [] for s in piece.get("sources", [])]
                folders += [entry.get("model") for entry in [*(part.get("models") or []), *sources]]
        folders = list(dict.fromkeys(filter(None, folders)))
        files = [file for folder in folders for file in Path(folder).glob("*.safetensors")]
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return
    if files:
        # A thread, because submitting the reads blocks for a while; the import goes on meanwhile.
        threading.Thread(target=_advise_will_need, args=(files,), daemon=True).start()


def _advise_will_need(files: list[Path]) -> None:
    """Ask for the files' first bytes in chunks, round robin: the engine reads the models in step."""
    with contextlib.ExitStack() as stack:
        descriptors = []
        for file in files:
            with contextlib.suppress(OSError):
                descriptors.append(os.open(file, os.O_RDONLY))
                stack.callback(os.close, descriptors[-1])
        budget_per_file = _STARTUP_READAHEAD_BYTES // max(1, len(descriptors))
        for offset in range(0, budget_per_file, _READAHEAD_CHUNK_BYTES):
            for descriptor in descriptors:
                os.posix_fadvise(descriptor, offset, _READAHEAD_CHUNK_BYTES, os.POSIX_FADV_WILLNEED)


def shard_size_bytes(text: str) -> int:
    """Bytes from mergekit's spelling (5B, 500M) or exme's (500MB, 5GB, 2GiB); at least 1 MB."""
    from exme.sizes import parse_size

    if match := _MERGEKIT_SIZE.fullmatch(text):
        size = int(match.group(1)) * _MERGEKIT_UNITS[match.group(2).upper()]
    else:
        size = parse_size(text)
    if size < _SMALLEST_SHARD_BYTES:
        raise ExmeError(f"shard size {text!r} is {size} bytes; give at least 1MB (e.g. 500MB, 5GB or 5B)")
    return size


def _merge(args: argparse.Namespace) -> None:
    shard_size = shard_size_bytes(args.shard_size)
    out_dir = _output_folder(args)
    _start_reading_inputs(args.config)
    from dataclasses import replace

    from exme.merge.execute import merge_to_dir, merge_with_stages, write_stages
    from exme.merge.multi import changed_stages, load_named_merges, load_recipe, with_stages

    _apply_mergekit_options(args)
    options = {
        "shard_size": shard_size,
        "device": _device(args),
        "show_progress": False if args.no_progress or args.quiet else None,
        "allow_crimes": args.allow_crimes,
        "copy_tokenizer": args.copy_tokenizer,
        "write_model_card": args.write_model_card,
    }
    report = None if args.quiet else _report_stage
    # as mergekit's global seed: for every merge of the file
    reseeded = functools.partial(replace, random_seed=args.random_seed)
    if out_dir is None:  # mergekit-multi's file of named merges only: each to the intermediate folder
        stages = load_named_merges(args.config)
        if args.random_seed is not None:
            stages = changed_stages(stages, reseeded)
        write_stages(stages, args.intermediate_dir, lazy=args.lazy, on_stage=report, **options)
        print(Path(args.intermediate_dir).absolute())
        return
    recipe = load_recipe(args.config)
    if args.random_seed is not None:
        recipe = reseeded(with_stages(recipe, reseeded))
    if args.intermediate_dir is None:
        print(merge_to_dir(recipe, out_dir, overwrite=args.overwrite, **options))
    else:
        intermediate = args.intermediate_dir
        print(merge_with_stages(recipe, out_dir, intermediate, lazy=args.lazy, on_stage=report, **options))


def _output_folder(args: argparse.Namespace) -> str | None:
    """OUT_DIR or mergekit-multi's --out-path; None for a file of named merges only (-I DIR alone)."""
    if args.out_dir is not None and args.out_path is not None:
        raise ExmeError("give the output folder once: as OUT_DIR or as --out-path (mergekit-multi's)")
    out_dir = args.out_dir or args.out_path
    if out_dir is None and args.intermediate_dir is None:
        raise ExmeError("give the output folder: OUT_DIR or --out-path (mergekit-multi's)")
    return out_dir


def _apply_mergekit_options(args: argparse.Namespace) -> None:
    """Refuse mergekit-yaml's options that exme does not follow; set the Hub cache."""
    args.no_safe_serialization = not args.safe_serialization
    if refused := [message for option, message in _MERGEKIT_REFUSED.items() if getattr(args, option)]:
        raise ExmeError(refused[0])
    if args.transformers_cache:  # where Hub ids are looked for and downloaded to
        from huggingface_hub import constants

        constants.HF_HUB_CACHE = args.transformers_cache


def _device(args: argparse.Namespace) -> str | None:
    """The compute device asked for (None: CUDA where available, else the CPU)."""
    if args.cuda or args.gpu_rich:  # mergekit's --gpu-rich includes --cuda
        return "cuda"
    if args.device in (None, "auto"):
        return None
    if not _DEVICE.fullmatch(args.device):
        raise ExmeError(f"--device {args.device}: exme computes on cpu, cuda or cuda:N (or auto)")
    return args.device


def _report_stage(name: str | None, folder: Path, kept: bool) -> None:
    merge = f"merge {name!r}" if name else "final merge"
    done = "kept (already merged)" if kept else "merged"
    print(f"{merge}: {folder} {done}", file=sys.stderr, flush=True)


def _kinship(args: argparse.Namespace) -> None:
    from exme.merge.kinship import METRICS, kinship

    result = kinship(args.model_a, args.model_b, args.base, split=args.split, device=args.device).to_dict()
    shown = METRICS if args.metric == "all" else (args.metric,)
    if args.json:
        header = {"model_a": args.model_a, "model_b": args.model_b, "base": args.base, "split": args.split}
        print(json.dumps(header | {metric: result[metric] for metric in shown}))
    else:
        for metric in shown:
            print(f"{metric} {result[metric]:.6g}")


def _methods(args: argparse.Namespace) -> None:
    print("merge methods and their parameters (global or per-model):")
    print(_methods_text())


class _ParserListingMethods(argparse.ArgumentParser):
    """Help that ends with the registered methods, imported only when help is shown: they import
    torch, which `exme merge` loads while its inputs are already being read."""

    def format_help(self) -> str:
        return f"{super().format_help()}\nmethods:\n{_methods_text()}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exme", description="Extrapolation merging and model-merging tools."
    )
    parser.add_argument("--version", action="version", version=f"exme {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_ParserListingMethods
    )
    merge = commands.add_parser(
        "merge",
        help="merge models as a mergekit-format YAML recipe says",
        description="Stream a merge of Hugging Face models into OUT_DIR.\n"
        "The recipe uses mergekit's YAML format (merge_method, base_model, models,\n"
        "slices or modules, parameters, dtype, out_dtype, tokenizer_source or tokenizer,\n"
        "chat_template) plus an optional random_seed that seeds the random drop masks\n"
        "of DARE and DELLA (default 0). A recipe of several YAML documents is\n"
        "mergekit-multi's: named merges that later ones use as models, computed as\n"
        "they are read; only the final merge is written, unless --intermediate-dir is\n"
        "given. mergekit-yaml's and mergekit-multi's options are accepted too.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("config", metavar="CONFIG.yml", help="the merge recipe")
    merge.add_argument("out_dir", metavar="OUT_DIR", nargs="?", help="the model folder to create")
    merge.add_argument("--out-path", metavar="OUT_DIR", help="same as OUT_DIR (mergekit-multi's spelling)")
    merge.add_argument(
        "--intermediate-dir",
        "-I",
        metavar="DIR",
        help="write each named merge of a multi-document recipe to DIR/NAME, and read it from there",
    )
    switch = argparse.BooleanOptionalAction
    merge.add_argument(
        "--lazy",
        action=switch,
        default=True,
        help="with --intermediate-dir, keep a named merge already in DIR/NAME unless its recipe or "
        "inputs changed (default: yes)",
    )
    merge.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    merge.add_argument(
        "--shard-size",
        "--out-shard-size",
        default="5GB",
        help="largest output shard in bytes, e.g. 500MB, 5GB or mergekit's 5B (default 5GB; at least 1MB)",
    )
    merge.add_argument(
        "--device",
        metavar="DEVICE",
        help="compute device: cpu, cuda, cuda:N or auto (default: cuda if available)",
    )
    merge.add_argument("--cuda", action=switch, default=False, help="same as --device cuda")
    merge.add_argument("--gpu-rich", action=switch, default=False, help="same as --cuda (mergekit's)")
    merge.add_argument("--random-seed", type=int, help="replaces the random_seed of the recipe's merges")
    merge.add_argument("--copy-tokenizer", action=switch, default=True, help="write the tokenizer files")
    merge.add_argument(
        "--write-model-card", action=switch, default=True, help="write the model card README.md"
    )
    merge.add_argument(
        "--allow-crimes", action=switch, default=False, help="merge models of different architectures"
    )
    merge.add_argument(
        "--transformers-cache", metavar="DIR", help="the Hugging Face cache to find Hub ids in"
    )
    merge.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    merge.add_argument("--quiet", "-q", action=switch, default=False, help="same as --no-progress")
    # Accepted so that mergekit-yaml command lines run unchanged; listed in the epilog.
    for flag in _MERGEKIT_NO_OP_FLAGS:
        merge.add_argument(flag, action=switch, help=argparse.SUPPRESS)
    for flags in _MERGEKIT_NO_OP_OPTIONS:
        merge.add_argument(*flags, help=argparse.SUPPRESS)
    merge.add_argument("--verbose", "-v", action="count", help=argparse.SUPPRESS)
    # Refused (_MERGEKIT_REFUSED), with a message saying why.
    merge.add_argument("--safe-serialization", action=switch, default=True, help=argparse.SUPPRESS)
    merge.add_argument("--unsafe-truncate-embeddings", action=switch, default=False, help=argparse.SUPPRESS)
    merge.add_argument("--lora-merge-dtype", help=argparse.SUPPRESS)
    no_ops = [*_MERGEKIT_NO_OP_FLAGS, *(f"{flags[-1]} VALUE" for flags in _MERGEKIT_NO_OP_OPTIONS), "-v"]
    merge.epilog = textwrap.fill(
        "Also accepted from mergekit-yaml, with no effect (exme always streams, writes safetensors "
        f"and runs no model code): {', '.join(no_ops)}, --safe-serialization, and the flags' --no- "
        "forms. Refused, with the reason: --unsafe-truncate-embeddings, --lora-merge-dtype, "
        "--no-safe-serialization.",
        width=79,
        break_on_hyphens=False,
    )
    merge.set_defaults(run=_merge)
    kinship = commands.add_parser(
        "kinship",
        help="model kinship: similarity of two models' deltas from their base",
        description="Model kinship (arXiv 2410.12613) of two models fine-tuned from BASE, over all\n"
        "their parameters: pcc (Pearson correlation of the deltas), cos (their cosine,\n"
        "signed; the authors' code reports its absolute value), ed (Euclidean distance\n"
        "between them). A model may be a folder or a recipe file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinship.add_argument("model_a", metavar="A", help="a model folder or recipe file")
    kinship.add_argument("model_b", metavar="B", help="another model of the same base")
    kinship.add_argument("--base", required=True, help="the base model both were fine-tuned from")
    kinship.add_argument(
        "--metric", choices=("pcc", "cos", "ed", "all"), default="pcc", help="what to print (default pcc)"
    )
    kinship.add_argument(
        "--split", action="store_true", help="numel-weighted mean of per-tensor metrics (--split-calculation)"
    )
    kinship.add_argument("--json", action="store_true", help="print one JSON object")
    kinship.add_argument(
        "--device", choices=("cpu", "cuda"), help="compute device (default: cuda if available)"
    )
    kinship.set_defaults(run=_kinship)
    methods = commands.add_parser("methods", help="list merge methods and their parameters")
    methods.set_defaults(run=_methods)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Raising lets the merge remove its half-written staging folder on the way out.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        args.run(args)
    except ExmeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> NoReturn:
    """The `exme` command: main(), then an exit without the interpreter's teardown (see
    exit_without_teardown). An exception still ends the process the usual way."""
    exit_without_teardown(main())


if __name__ == "__main__":
    run()
