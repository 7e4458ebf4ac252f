"""A tiny character-level Llama base model, pretrained briefly on the generic demo corpus."""

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    set_seed,
)

from exme.errors import ExmeError
from exme.files import staged_dir
from exme.train.sft import quiet_training_arguments, save_model_folder

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


def build_tokenizer(corpus_texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character seen in corpus_texts (a BPE model without merges), plus specials.

    No post-processor: nothing is added around the text, so SFT and lm-eval see the same ids.
    """
    characters = sorted(set().union(*map(set, corpus_texts)))
    if not characters:
        raise ExmeError("build_tokenizer: corpus_texts contain no characters")
    vocab = {token: index for index, token in enumerate([PAD, BOS, EOS, UNK, *characters])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.add_special_tokens([PAD, BOS, EOS, UNK])
    tokenizer.decoder = decoders.Fuse()  # characters are concatenated back without separators
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def _packed_chunks(token_ids: list[int], seq_len: int) -> list[dict[str, list[int]]]:
    """Cut the token stream into full seq_len windows (causal-LM labels = inputs)."""
    return [
        {
            "input_ids": token_ids[start : start + seq_len],
            "labels": token_ids[start : start + seq_len],
        }
        for start in range(0, len(token_ids) - seq_len + 1, seq_len)
    ]


def pretrain_base(
    out_dir: str | os.PathLike,
    corpus_path: str | os.PathLike,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seq_len: int,
    seed: int,
    device: torch.device | str | None = None,
) -> int:
    """Pretrain a tiny LlamaForCausalLM on the text at corpus_path; save it to out_dir.

    Uses `Trainer` over packed seq_len windows with a cosine schedule; no checkpoints (a killed
    run of about a minute is simply rerun). Returns the number of parameters.
    """
    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    if not corpus_path.is_file():
        raise ExmeError(f"pretraining corpus {corpus_path} does not exist")
    if seq_len > max_position_embeddings:
        raise ExmeError(f"seq_len ({seq_len}) exceeds max_position_embeddings ({max_position_embeddings})")
    text = corpus_path.read_text()
    tokenizer = build_tokenizer(text.splitlines(keepends=True))
    chunks = _packed_chunks(tokenizer(text, add_special_tokens=False)["input_ids"], seq_len)
    if not chunks:
        raise ExmeError(f"pretraining corpus {corpus_path} is shorter than seq_len ({seq_len})")

    set_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )

    with staged_dir(out_dir) as staging:
        args = quiet_training_arguments(
            staging / "trainer",
            device=device,
            seed=seed,
            learning_rate=learning_rate,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            warmup_steps=max(1, steps // 20),
            lr_scheduler_type="cosine",
            weight_decay=0.01,
            save_strategy="no",
            logging_steps=max(1, steps // 10),
        )
        Trainer(model=model, args=args, train_dataset=chunks).train()
        shutil.rmtree(staging / "trainer")
        save_model_folder(model, tokenizer, staging)
    return model.num_parameters()
