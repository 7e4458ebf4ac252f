"""The floating-point precisions exme reads from configs and recipes, by name, and their torch dtypes.

Importing this module imports no torch: the config check, which runs while Snakemake builds the
DAG, validates the names; only `torch_dtype` needs torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exme.errors import ExmeError

if TYPE_CHECKING:
    import torch

AUTO = "auto"  # a model's own dtype, as transformers' from_pretrained(dtype="auto") loads it
# What a merge computes in and writes (mergekit's dtype and out_dtype).
MERGE_DTYPES = ("float32", "float16", "bfloat16", "float64")
# What a model is loaded in for training or evaluation (lm-eval's `dtype` model argument).
MODEL_DTYPES = (AUTO, "float32", "bfloat16", "float16")


def check_dtype(value: object, key: str, choices: tuple[str, ...] = MODEL_DTYPES) -> str:
    """`value` if it names one of `choices`, else an error naming the config key."""
    if value not in choices:
        raise ExmeError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def torch_dtype(
    value: str | torch.dtype, key: str, choices: tuple[str, ...] = MODEL_DTYPES
) -> str | torch.dtype:
    """The torch dtype a name (or a torch dtype) stands for, or "auto"; an error naming `key` for
    anything outside `choices`."""
    import torch

    if isinstance(value, torch.dtype):
        names = [name for name in choices if name != AUTO and getattr(torch, name) == value]
        value = names[0] if names else value
    name = check_dtype(value, key, choices)
    return name if name == AUTO else getattr(torch, name)
