"""Supervised fine-tuning with TRL's `SFTTrainer`: resumable, checkpointed, exported per step.

The data are prompt/completion records or chat `messages` records (rendered with the tokenizer's
chat template); the loss is on the completion only, padding is masked by position, so that with a
pad token equal to eos the eos ending each completion is still trained. Every checkpoint keeps the
model weights in the training dtype; only the newest keeps what resuming needs.
"""

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils.constants import FSDP_MODEL_NAME, OPTIMIZER_NAME
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from exme.device import resolve_device
from exme.dtypes import torch_dtype
from exme.errors import ExmeError
from exme.files import CONFIG_FILE, staged_dir
from exme.train.checkpoints import checkpoint_folder, checkpoint_steps
from exme.train.data import read_sft_records
from exme.train.settings import check_fp16_weights, check_max_seq_length, check_mixed_precision, check_steps

IGNORE_INDEX = -100  # label value the causal-LM loss skips
# The optimizer state in each layout the Trainer writes: `optimizer.pt` (one process, DDP), under
# FSDP accelerate's `optimizer.bin` (full state dict), `optimizer_0/` or `optimizer_0_rank*.bin`
# (sharded), and DeepSpeed's `global_step*/`.
OPTIMIZER_STATE = (f"{OPTIMIZER_NAME}*", "global_step*")
# What the Trainer writes into a checkpoint beside the model: the resume state (kept in the newest
# checkpoint only) and its bookkeeping. The exported model folders hold neither. Under FSDP the
# resume state includes accelerate's own copy of the model (`pytorch_model_fsdp.bin`, or the shards
# in `pytorch_model_fsdp_0/`), which a resume reloads; the safetensors are the exported model.
RESUME_STATE = (*OPTIMIZER_STATE, "scheduler*", "scaler*", "rng_state*", f"{FSDP_MODEL_NAME}*")
TRAINER_FILES = (*RESUME_STATE, "trainer_state.json", "training_args.bin", "README.md")
TRAINER_STATE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
# finetune.optim's one name beside transformers' own: AdamW whose updates to bf16 weights are
# Kahan-compensated (torch-optimi), so that full fine-tuning with bf16 weights, where fp32 master
# weights do not fit, keeps updates smaller than bf16's precision instead of rounding them away.
KAHAN_ADAMW = "adamw_kahan"
HALF_DTYPES = (torch.bfloat16, torch.float16)


def log(message: str) -> None:
    """A line in the job's log (the rule scripts redirect stderr there), from the main process only
    once training processes form a group."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    print(f"[exme.train] {message}", file=sys.stderr, flush=True)


def quiet_training_arguments(
    output_dir: str | os.PathLike,
    *,
    device: torch.device | str | None,
    seed: int,
    arguments_class: type[TrainingArguments] = TrainingArguments,
    **overrides,
) -> TrainingArguments:
    """Arguments shared by pretraining and SFT: no network, no tracker, quiet off a terminal."""
    device = resolve_device(device)
    settings = {
        "output_dir": str(output_dir),
        "use_cpu": device.type == "cpu",
        "seed": seed,
        "data_seed": seed,
        "report_to": "none",
        "disable_tqdm": not sys.stderr.isatty(),
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
    }
    return arguments_class(**{**settings, **overrides})


def save_model_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Weights (safetensors), config, generation config and tokenizer: a loadable HF folder."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


# --------------------------------------------------------------------------------------------- data


def _truncated(dataset, max_seq_length: int):
    """The tokenized data set cut to max_seq_length tokens (keeping the start, as TRL does), with the
    count logged; examples left without a completion token are dropped."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    too_long = sum(length > max_seq_length for length in lengths)
    if not too_long:
        log(f"{len(lengths)} examples, none longer than max_seq_length ({max_seq_length} tokens)")
        return dataset

    def cut(example):
        return {key: example[key][:max_seq_length] for key in ("input_ids", "labels")}

    cut_dataset = dataset.map(cut).filter(lambda example: any(x != IGNORE_INDEX for x in example["labels"]))
    dropped = len(dataset) - len(cut_dataset)
    if not len(cut_dataset):
        shortest = min(
            next(i for i, label in enumerate(labels) if label != IGNORE_INDEX) for labels in dataset["labels"]
        )
        raise ExmeError(
            f"finetune.max_seq_length ({max_seq_length}) is shorter than every prompt "
            f"(the shortest is {shortest} tokens): no example keeps a completion token"
        )
    log(
        f"{too_long} of {len(lengths)} examples were longer than max_seq_length ({max_seq_length} tokens) "
        f"and were truncated (longest: {max(lengths)} tokens); {dropped} of them lost their whole "
        "completion and were dropped"
    )
    return cut_dataset


# -------------------------------------------------------------------------------------- checkpoints


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def _checkpoints(state_dir: Path) -> list[Path]:
    """The Trainer's checkpoint folders in state_dir, oldest first."""
    if not state_dir.is_dir():
        return []
    found = [p for p in state_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(found, key=_step)


def has_resume_state(checkpoint: Path) -> bool:
    """Whether the checkpoint holds optimizer state, in any layout the Trainer writes."""
    return any(path for pattern in OPTIMIZER_STATE for path in checkpoint.glob(pattern))


def _complete_checkpoints(state_dir: Path) -> list[Path]:
    return [c for c in _checkpoints(state_dir) if (c / TRAINER_STATE).is_file()]


def prune_resume_state(state_dir: str | os.PathLike) -> None:
    """Delete optimizer, scheduler, scaler and RNG state from every complete checkpoint but the
    newest: the older ones keep only their model, which is all the exported series needs."""
    for checkpoint in _complete_checkpoints(Path(state_dir))[:-1]:
        for pattern in RESUME_STATE:
            for path in checkpoint.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


class _PruneResumeState(TrainerCallback):
    """After each save (the new checkpoint is complete), keep resume state in the newest only."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            prune_resume_state(args.output_dir)


def resumable_checkpoint(state_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: the newest complete one."""
    complete = _complete_checkpoints(Path(state_dir))
    return complete[-1] if complete else None


def delete_partial_checkpoints(state_dir: str | os.PathLike) -> None:
    """Delete the checkpoints newer than the newest complete one: a kill cut them short while they
    were being written."""
    newest = resumable_checkpoint(state_dir)
    for partial in _checkpoints(Path(state_dir)):
        if newest is None or _step(partial) > _step(newest):
            log(f"deleting {partial}: written only in part (the job was killed while saving it)")
            shutil.rmtree(partial)


def _on_main_process(trainer, operation, *args) -> None:
    """Run a file operation in the main process only, the others waiting until it is done: two
    processes deleting the same files race each other."""
    if trainer.is_world_process_zero():
        operation(*args)
    trainer.accelerator.wait_for_everyone()


def _export(checkpoint: Path, out_dir: Path) -> None:
    """The checkpoint's model folder without the Trainer's files; hard links where possible (the
    exported series then costs no disk of its own), else copies."""
    out_dir.mkdir(parents=True)
    skipped = {path for pattern in TRAINER_FILES for path in checkpoint.glob(pattern)}
    for path in sorted(checkpoint.iterdir()):
        if path in skipped or not path.is_file():
            continue
        try:
            os.link(path, out_dir / path.name)
        except OSError:
            shutil.copy2(path, out_dir / path.name)


# -------------------------------------------------------------------------------------- fine-tuning


def _check_precision(bf16: bool, fp16: bool, dtype: torch.dtype, device: torch.device) -> None:
    """The settings' precision rules, then what only this process knows: the GPU's bfloat16 support
    and the dtype the weights were loaded in."""
    check_mixed_precision(bf16, fp16)
    wants_bf16 = bf16 or dtype == torch.bfloat16
    if wants_bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        key = "finetune.bf16" if bf16 else "finetune.dtype"
        raise ExmeError(
            f"{key}: this GPU ({torch.cuda.get_device_name(device)}) cannot compute in bfloat16; "
            "use finetune.fp16 with finetune.dtype: float32"
        )
    check_fp16_weights(fp16, str(dtype).removeprefix("torch."), loaded=True)
    if fp16 and device.type != "cuda":
        raise ExmeError(f"finetune.fp16 mixed precision needs a CUDA GPU; this job runs on {device.type}")


def dropped_update_fraction(model: torch.nn.Module, step: float) -> float:
    """The fraction of the half-precision weights that an update of size `step` leaves unchanged
    once rounded back to their dtype (AdamW's first updates are about the learning rate in size)."""
    dropped = total = 0
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dtype not in HALF_DTYPES:
                continue
            for chunk in parameter.detach().reshape(-1).split(2**24):  # bounds the fp32 copy
                dropped += int(((chunk.float() + step).to(chunk.dtype) == chunk).sum())
                total += chunk.numel()
    return dropped / total if total else 0.0


def _optimizer(optim: str, args: TrainingArguments) -> tuple[type, dict[str, Any]] | None:
    """The Trainer's `optimizer_cls_and_kwargs` for exme's own optimizer name, with the Trainer's
    AdamW settings (transformers builds the optimizers of its own names itself)."""
    if optim != KAHAN_ADAMW:
        return None
    from optimi import AdamW

    return AdamW, {
        "lr": args.learning_rate,
        "betas": (args.adam_beta1, args.adam_beta2),
        "eps": args.adam_epsilon,
        "weight_decay": args.weight_decay,
        "kahan_sum": True,
    }


def _warn_dropped_updates(model: torch.nn.Module, optim: str, learning_rate: float) -> None:
    """Half-precision weights under a plain optimizer lose every update below their precision."""
    if optim == KAHAN_ADAMW or model.dtype not in HALF_DTYPES:
        return
    fraction = dropped_update_fraction(model, learning_rate)
    log(
        f"WARNING: finetune.dtype {str(model.dtype).removeprefix('torch.')} with {optim}: an update of "
        f"the learning rate's size ({learning_rate:g}) rounds away on {fraction:.1%} of the weights. "
        "Train fp32 master weights (finetune.dtype: float32 with bf16: true), or keep bf16 weights "
        f"with finetune.optim: {KAHAN_ADAMW}"
    )


def _fsdp_checkpoints_activations() -> bool:
    """Whether this process runs under FSDP with FSDP's own activation checkpointing (accelerate
    launch's fsdp_activation_checkpointing), which then replaces the Trainer's."""
    return all(
        os.environ.get(variable, "false").lower() == "true"
        for variable in ("ACCELERATE_USE_FSDP", "FSDP_ACTIVATION_CHECKPOINTING")
    )


def sft_trainer(
    base_dir: str | os.PathLike,
    train_jsonl: str | os.PathLike,
    state_dir: str | os.PathLike,
    *,
    learning_rate: float,
    max_steps: int,
    save_steps: int,
    batch_size: int,
    seed: int,
    warmup_steps: float = 0,
    weight_decay: float = 0.0,
    lr_scheduler_type: str = "linear",
    optim: str = "adamw_torch_fused",  # transformers' default
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = False,
    max_seq_length: int = 1024,
    bf16: bool = False,
    fp16: bool = False,
    dtype: str = "float32",
    device: torch.device | str | None = None,
):
    """TRL's SFTTrainer over the model in base_dir and the records of train_jsonl, its data
    tokenized, masked and truncated, ready to train (see `finetune` for the arguments)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    base_dir = Path(base_dir)
    check_steps(max_steps, save_steps)
    check_max_seq_length(max_seq_length)
    records, data_format = read_sft_records(train_jsonl)
    if not (base_dir / CONFIG_FILE).is_file():
        raise ExmeError(f"base model folder {base_dir} has no {CONFIG_FILE}")
    device = resolve_device(device)
    weights_dtype = torch_dtype(dtype, "finetune.dtype")

    # torch.distributed is set up (here, as the Trainer's arguments would) before anything is loaded:
    # under FSDP with fsdp_cpu_ram_efficient_loading only the first process then reads the weights
    # into host memory, and the other processes stay quiet.
    PartialState(cpu=device.type == "cpu")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if data_format == "chat" and not tokenizer.chat_template:
        raise ExmeError(
            f"the tokenizer of {base_dir} has no chat template, which the 'messages' records of "
            f"{train_jsonl} need (data.sft_train); use prompt/completion records or a chat model"
        )
    if tokenizer.eos_token is None:
        raise ExmeError(f"the tokenizer of {base_dir} has no eos token: a completion could not end")
    if tokenizer.pad_token is None:
        log(f"the tokenizer has no pad token: padding with eos {tokenizer.eos_token!r}, masked by position")
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=weights_dtype)
    _check_precision(bf16, fp16, model.dtype, device)
    _warn_dropped_updates(model, optim, learning_rate)

    try:
        args = quiet_training_arguments(
            state_dir,
            device=device,
            seed=seed,
            arguments_class=SFTConfig,
            remove_unused_columns=True,
            learning_rate=learning_rate,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            activation_checkpointing=gradient_checkpointing and not _fsdp_checkpoints_activations(),
            optim="adamw_torch" if optim == KAHAN_ADAMW else optim,  # the Trainer's: not used then
            bf16=bf16,
            fp16=fp16,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            lr_scheduler_type=lr_scheduler_type,
            save_strategy="steps",
            save_steps=save_steps,
            logging_steps=max(1, max_steps // 10),
            # Truncation is applied below, where it is counted; TRL tokenizes, masks and pads.
            max_length=None,
            completion_only_loss=True,
            packing=False,
        )
    except ValueError as error:  # e.g. an unknown optimizer or scheduler, or bf16 on a machine without it
        raise ExmeError(f"finetune: {error}") from None
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        callbacks=[_PruneResumeState()],
        optimizer_cls_and_kwargs=_optimizer(optim, args),
    )
    trainer.train_dataset = _truncated(trainer.train_dataset, max_seq_length)
    return trainer


def finetune(
    base_dir: str | os.PathLike,
    train_jsonl: str | os.PathLike,
    out_dir: str | os.PathLike,
    state_dir: str | os.PathLike,
    *,
    max_steps: int,
    save_steps: int,
    **settings: Any,
) -> list[int]:
    """SFT the model in base_dir with TRL; export every checkpoint to out_dir/step-{N}/ and return
    the steps.

    settings: learning_rate, batch_size and seed (required), warmup_steps, weight_decay,
    lr_scheduler_type, optim, gradient_accumulation_steps, gradient_checkpointing, max_seq_length
    (longer examples are truncated, keeping their start), `dtype` (the dtype the weights are loaded
    and trained in; "auto": the folder's own), `bf16` or `fp16` (mixed precision) and `device`.

    Trainer checkpoints go to state_dir every save_steps; only the newest keeps its optimizer,
    scheduler and RNG state, from which a rerun after a kill resumes. max_steps must be a multiple
    of save_steps so that the final model is one of the checkpoints.
    """
    out_dir, state_dir = Path(out_dir), Path(state_dir)
    trainer = sft_trainer(
        base_dir, train_jsonl, state_dir, max_steps=max_steps, save_steps=save_steps, **settings
    )
    _on_main_process(trainer, delete_partial_checkpoints, state_dir)
    last_checkpoint = resumable_checkpoint(state_dir)
    if last_checkpoint is None or _step(last_checkpoint) < max_steps:
        if last_checkpoint is not None:
            if not has_resume_state(last_checkpoint):
                raise ExmeError(
                    f"cannot resume from {last_checkpoint}: its optimizer state is gone; "
                    f"delete {state_dir} to start over"
                )
            log(f"resuming from {last_checkpoint}")
        trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)
    _on_main_process(trainer, prune_resume_state, state_dir)

    steps = checkpoint_steps(max_steps, save_steps)
    if not trainer.is_world_process_zero():
        return steps
    with staged_dir(out_dir) as staging:
        for step in steps:
            checkpoint = state_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
            if not (checkpoint / TRAINER_STATE).is_file():
                raise ExmeError(f"checkpoint {checkpoint} is missing; was state_dir pruned?")
            _export(checkpoint, staging / checkpoint_folder(step))
    return steps
