"""Supervised fine-tuning with `Trainer`: resumable, checkpointed, exported per step."""

import json
import os
import sys
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from exme.device import default_device
from exme.errors import ExmeError
from exme.files import staged_dir
from exme.train.checkpoints import checkpoint_folder, checkpoint_steps

IGNORE_INDEX = -100  # label value the causal-LM loss skips


def quiet_training_arguments(
    output_dir: str | os.PathLike, *, device: torch.device | str | None, seed: int, **overrides
) -> TrainingArguments:
    """Arguments shared by pretraining and SFT: no network, no tracker, quiet off a terminal."""
    device = torch.device(device) if device is not None else default_device()
    return TrainingArguments(
        output_dir=str(output_dir),
        use_cpu=device.type == "cpu",
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **overrides,
    )


def save_model_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Weights (safetensors), config, generation config and tokenizer: a loadable HF folder."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _read_sft_examples(train_jsonl: Path, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, list[int]]]:
    """Tokenize prompt + completion + eos; only completion and eos carry labels."""
    examples = []
    with train_jsonl.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
                raise ExmeError(f"{train_jsonl}:{line_number}: needs string fields 'prompt' and 'completion'")
            prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            target_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            target_ids.append(tokenizer.eos_token_id)
            examples.append(
                {
                    "input_ids": prompt_ids + target_ids,
                    "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
                }
            )
    if not examples:
        raise ExmeError(f"{train_jsonl} holds no training examples")
    return examples


class _PadCollator:
    """Right-pads a batch; padding is masked out of attention and loss."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in batch)

        def pad(values: list[int], fill: int) -> list[int]:
            return values + [fill] * (width - len(values))

        return {
            "input_ids": torch.tensor([pad(e["input_ids"], self.pad_token_id) for e in batch]),
            "labels": torch.tensor([pad(e["labels"], IGNORE_INDEX) for e in batch]),
            "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in batch]),
        }


def finetune(
    base_dir: str | os.PathLike,
    train_jsonl: str | os.PathLike,
    out_dir: str | os.PathLike,
    state_dir: str | os.PathLike,
    *,
    learning_rate: float,
    max_steps: int,
    save_steps: int,
    batch_size: int,
    seed: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    lr_scheduler_type: str = "linear",
    bf16: bool = False,
    gradient_checkpointing: bool = False,
    device: torch.device | str | None = None,
) -> list[int]:
    """SFT the model in base_dir; export every checkpoint to out_dir/step-{N}/ and return the steps.

    Trainer checkpoints (with optimizer state) go to state_dir every save_steps; a rerun after an
    interruption resumes from the last one there. max_steps must be a multiple of save_steps so
    that the final model is one of the exported checkpoints. bf16 trains in bfloat16 mixed
    precision, gradient_checkpointing trades compute for activation memory. Under `accelerate
    launch` (one process per GPU) only the main process exports.
    """
    base_dir, train_jsonl = Path(base_dir), Path(train_jsonl)
    out_dir, state_dir = Path(out_dir), Path(state_dir)
    if save_steps < 1 or max_steps < 1 or max_steps % save_steps:
        raise ExmeError(f"max_steps ({max_steps}) must be a positive multiple of save_steps ({save_steps})")
    if not train_jsonl.is_file():
        raise ExmeError(f"SFT training file {train_jsonl} does not exist")
    if not (base_dir / "config.json").is_file():
        raise ExmeError(f"base model folder {base_dir} has no config.json")

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    args = quiet_training_arguments(
        state_dir,
        device=device,
        seed=seed,
        learning_rate=learning_rate,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        lr_scheduler_type=lr_scheduler_type,
        save_strategy="steps",
        save_steps=save_steps,
        logging_steps=max(1, max_steps // 10),
        bf16=bf16,
        activation_checkpointing=gradient_checkpointing,  # transformers 5 name of gradient checkpointing
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_read_sft_examples(train_jsonl, tokenizer),
        data_collator=_PadCollator(tokenizer.pad_token_id),
    )
    last_checkpoint = get_last_checkpoint(str(state_dir)) if state_dir.is_dir() else None
    if last_checkpoint is None or int(last_checkpoint.rsplit("-", 1)[1]) < max_steps:
        if last_checkpoint is not None:
            print(f"resuming from {last_checkpoint}", flush=True)
        trainer.train(resume_from_checkpoint=last_checkpoint)

    steps = checkpoint_steps(max_steps, save_steps)
    if not trainer.is_world_process_zero():
        return steps
    with staged_dir(out_dir) as staging:
        for step in steps:
            checkpoint = state_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
            if not checkpoint.is_dir():
                raise ExmeError(f"checkpoint {checkpoint} is missing; was state_dir pruned?")
            step_model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
            save_model_folder(step_model, tokenizer, staging / checkpoint_folder(step))
    return steps
