"""Fixtures of the merge engine's tests: more fine-tunes, deeper models, models with tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import save_llama, save_vision_language


@pytest.fixture(scope="session")
def four_layer_models(tmp_path_factory) -> dict[str, Path]:
    """A 4-layer fp32 base and three fine-tunes of it: enough for slices, gradients, model_stock."""
    root = tmp_path_factory.mktemp("four_layers")
    base = save_llama(root / "base", 10, num_hidden_layers=4)
    tuned = {name: save_llama(root / name, seed, base=base, num_hidden_layers=4)
             for name, seed in (("ft_a", 11), ("ft_b", 12), ("ft_c", 13))}  # fmt: skip
    return {"base": base, **tuned}


@pytest.fixture(scope="session")
def vision_language_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny Qwen2-VL base and two fine-tunes of it: models of several modules."""
    root = tmp_path_factory.mktemp("vision_language")
    base = save_vision_language(root / "base", 30)
    tuned = {
        name: save_vision_language(root / name, seed, base=base)
        for name, seed in (("ft_a", 31), ("ft_b", 32))
    }
    return {"base": base, **tuned}


def _bpe_tokenizer(texts: list[str], vocab_size: int, special: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", *special])
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def vocabulary_models(tmp_path_factory) -> dict[str, Path]:
    """A base and a fine-tune sharing one tokenizer, and a model with another vocabulary (some
    tokens shared, some its own, one added special token): the cases of a vocabulary union."""
    root = tmp_path_factory.mktemp("vocabularies")
    shared = _bpe_tokenizer(["merge the models", "hello world", "extrapolate more"], 48, [])
    other = _bpe_tokenizer(["merge models kindly", "hello there world", "zebra quiz"], 56, ["<|im_start|>"])
    base = save_llama(root / "base", 20, vocab_size=len(shared))
    models = {
        "base": base,
        "tuned": save_llama(root / "tuned", 21, base=base, vocab_size=len(shared)),
        "other": save_llama(root / "other", 22, vocab_size=len(other)),
    }
    for name, tokenizer in (("base", shared), ("tuned", shared), ("other", other)):
        tokenizer.save_pretrained(models[name])
    return models
