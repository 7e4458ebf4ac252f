"""The rules fine-tuning's settings obey, checked twice: by the config check while Snakemake builds
the DAG (so a bad config fails before any job runs) and by the trainer (which may be called without
the pipeline). Importing this module imports no torch.

What only the training process can know (the GPU's bfloat16 support, the dtype the weights loaded
in) is checked by the trainer alone, in `exme.train.sft`.
"""

from exme.errors import ExmeError

# The weights fp16 mixed precision trains: its gradient scaler cannot unscale fp16 gradients.
FP16_WEIGHTS = "float32"


def check_steps(max_steps: int, save_steps: int, section: str | None = None) -> None:
    """max_steps must be a positive multiple of save_steps, so that the final model is one of the
    checkpoints. `section` (e.g. "expert_finetune") names the config section in the message."""
    if save_steps < 1 or max_steps < 1 or max_steps % save_steps:
        where = f"{section}: " if section else ""
        raise ExmeError(
            f"{where}max_steps ({max_steps}) must be a positive multiple of save_steps ({save_steps})"
        )


def check_max_seq_length(max_seq_length: int) -> None:
    """A training example needs a prompt token and a completion token."""
    if max_seq_length < 2:
        raise ExmeError(f"finetune.max_seq_length ({max_seq_length}) must be at least 2")


def check_warmup_steps(warmup_steps: float) -> None:
    """finetune.warmup_steps is a number of steps, or a fraction of max_steps below 1."""
    if warmup_steps != int(warmup_steps) and warmup_steps >= 1:
        raise ExmeError(f"finetune.warmup_steps ({warmup_steps}): a number of steps, or a fraction below 1")


def check_mixed_precision(bf16: bool, fp16: bool) -> None:
    """At most one mixed precision."""
    if bf16 and fp16:
        raise ExmeError("finetune.bf16 and finetune.fp16 are both true; choose one mixed precision")


def check_fp16_weights(fp16: bool, dtype: str, *, loaded: bool = False) -> None:
    """fp16 mixed precision needs float32 weights. `dtype` is finetune.dtype as set (its "auto", the
    base folder's own dtype, is not known to be float32 before the model is read), or with `loaded`
    the dtype the weights were loaded in."""
    if not fp16 or dtype == FP16_WEIGHTS:
        return
    reason = "fp16 gradients cannot be unscaled"
    if loaded:
        raise ExmeError(
            f"finetune.fp16 mixed precision needs {FP16_WEIGHTS} weights (finetune.dtype gives {dtype}); "
            f"{reason}. Use bf16 with bfloat16 weights instead"
        )
    raise ExmeError(
        f"finetune.fp16 mixed precision needs finetune.dtype: {FP16_WEIGHTS} (got {dtype}); {reason}. "
        "Use bf16 instead"
    )
