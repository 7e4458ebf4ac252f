"""`python -m exme.train BASE TRAIN_JSONL OUT_DIR STATE_DIR --settings JSON --threads N`: fine-tuning
in a process of its own, started by the finetune rule (see exme.train.launch); under
`accelerate launch` one such process runs per GPU."""

import argparse
import json
import sys

from exme.device import use_threads
from exme.errors import ExmeError
from exme.train.sft import finetune


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exme.train", description=__doc__)
    for name in ("base_dir", "train_jsonl", "out_dir", "state_dir"):
        parser.add_argument(name)
    parser.add_argument("--settings", type=json.loads, required=True, help="finetune()'s keywords, JSON")
    parser.add_argument("--threads", type=int, required=True, help="CPU threads of this process")
    args = parser.parse_args(argv)
    use_threads(args.threads)
    try:
        finetune(args.base_dir, args.train_jsonl, args.out_dir, args.state_dir, **args.settings)
    except ExmeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
