"""Fine-tuning data from a Hugging Face Hub data set, written as the JSONL file fine-tuning reads.

Hub instruction sets come in many shapes; the ones taken here are those whose records already are
chat `messages` lists or prompt/completion strings (e.g. allenai/tulu-3-sft-mixture,
HuggingFaceH4/ultrachat_200k), written with only those fields.
"""

import json
import os

from exme.errors import ExmeError
from exme.files import staged_file

SFT_FIELDS = (("messages",), ("prompt", "completion"))


def write_hub_sft_data(
    out_path: str | os.PathLike,
    *,
    path: str,
    name: str | None = None,
    split: str = "train",
    n_examples: int | None = None,
    seed: int = 0,
) -> int:
    """Load `path` (`datasets.load_dataset`), keep a seeded random subset of n_examples records
    (all if None) and write their SFT fields as JSONL to out_path. Returns the number written."""
    import datasets

    dataset = datasets.load_dataset(path, name, split=split)
    fields = next((wanted for wanted in SFT_FIELDS if set(wanted) <= set(dataset.column_names)), None)
    if fields is None:
        raise ExmeError(
            f"data.sft_train: the data set {path} ({split}) has columns {dataset.column_names}, "
            "neither 'messages' nor 'prompt' and 'completion'"
        )
    if n_examples is not None:
        if n_examples > len(dataset):
            raise ExmeError(
                f"data.sft_train.n_examples: {n_examples} exceeds the {len(dataset)} records of {path}"
            )
        dataset = dataset.shuffle(seed=seed).select(range(n_examples))
    with staged_file(out_path) as tmp, tmp.open("w") as handle:
        for record in dataset.select_columns(list(fields)):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(dataset)
