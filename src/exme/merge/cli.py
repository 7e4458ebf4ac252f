"""The `exme` command line: `exme merge CONFIG.yml OUT_DIR`, `exme kinship A B --base BASE`,
`exme methods`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from exme.errors import ExmeError

# Bytes of input weights the kernel is asked to read ahead while Python imports torch: enough to
# cover the import on a small merge, little enough not to churn the page cache on a huge one.
_STARTUP_READAHEAD_BYTES = 2**30
# Linux caps one POSIX_FADV_WILLNEED call at the device's read-ahead window (often 8 MB; one
# call for a whole file then reads only its first window), so the advice is given in chunks.
_READAHEAD_CHUNK_BYTES = 8 * 2**20


def _methods_text() -> str:
    from exme.merge.methods.registry import BasePolicy, registered_methods

    lines = []
    for method in registered_methods():
        base = "needs base_model" if method.base is BasePolicy.REQUIRED else "no base"
        lines.append(f"  {method.name}  ({method.pretty_name}; {base})")
        for parameter in method.parameters:
            default = "required" if parameter.required else f"default {parameter.default}"
            lines.append(
                f"      {parameter.name}: {parameter.type.__name__}, "
                f"{parameter.scope.value.replace('_', '-')}, {default}"
            )
    return "\n".join(lines)


def _start_reading_inputs(config: str) -> None:
    """Let the disk work during start-up: importing torch takes a noticeable time, which on a small
    merge would otherwise come on top of reading the inputs. Errors are left to the recipe loader."""
    import yaml

    try:
        recipe = yaml.safe_load(Path(config).read_text())
        folders = [recipe.get("base_model"), *(entry.get("model") for entry in recipe.get("models", []))]
        files = [file for folder in filter(None, folders) for file in Path(folder).glob("*.safetensors")]
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


def _merge(args: argparse.Namespace) -> None:
    _start_reading_inputs(args.config)
    from exme.merge.execute import merge_to_dir
    from exme.merge.recipe import load_recipe

    out_dir = merge_to_dir(
        load_recipe(args.config),
        args.out_dir,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        device=args.device,
        show_progress=False if args.no_progress else None,
    )
    print(out_dir)


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
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_ParserListingMethods
    )
    merge = commands.add_parser(
        "merge",
        help="merge models as a mergekit-format YAML recipe says",
        description="Stream a merge of Hugging Face safetensors models into OUT_DIR.\n"
        "The recipe uses mergekit's YAML format (merge_method, base_model, models,\n"
        "parameters, dtype, out_dtype, tokenizer_source) plus an optional random_seed\n"
        "that seeds DARE's random masks (default 0).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("config", metavar="CONFIG.yml", help="the merge recipe")
    merge.add_argument("out_dir", metavar="OUT_DIR", help="the model folder to create")
    merge.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    merge.add_argument("--shard-size", default="5GB", help="largest output shard, e.g. 500MB (default 5GB)")
    merge.add_argument(
        "--device", choices=("cpu", "cuda"), help="compute device (default: cuda if available)"
    )
    merge.add_argument("--no-progress", action="store_true", help="hide the progress bar")
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


if __name__ == "__main__":
    sys.exit(main())
