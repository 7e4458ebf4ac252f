"""tokenizer_source / tokenizer: the output vocabulary, and embedding rows that follow it, as mergekit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from exme.merge.execute import merge_to_dir
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder

VOCABULARY_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def _run_mergekit(recipe: dict, out: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    options = MergeOptions(write_model_card=False, quiet=True)
    run_merge(MergeConfiguration.model_validate(recipe), str(out), options=options)
    return out


def _recipe(models, **tokenizer) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(models["base"]),
        "models": [
            {"model": str(models["tuned"]), "parameters": {"weight": 0.5}},
            {"model": str(models["other"]), "parameters": {"weight": 0.3}},
        ],
        "dtype": "float32",
        **tokenizer,
    }


def _assert_same_rows_per_token(ours: Path, theirs: Path) -> None:
    """Same vocabulary and, token by token, the same embedding rows (new tokens' ids may differ:
    mergekit adds them in hash order)."""
    our_vocab = AutoTokenizer.from_pretrained(ours).get_vocab()
    their_vocab = AutoTokenizer.from_pretrained(theirs).get_vocab()
    assert our_vocab.keys() == their_vocab.keys()
    our_tensors, their_tensors = load_folder(ours), load_folder(theirs)
    assert our_tensors.keys() == their_tensors.keys()
    for name, theirs_tensor in their_tensors.items():
        ours_tensor = our_tensors[name]
        assert ours_tensor.shape == theirs_tensor.shape, name
        if name in VOCABULARY_TENSORS:
            tokens = sorted(our_vocab)
            ours_tensor = ours_tensor[[our_vocab[t] for t in tokens]]
            theirs_tensor = theirs_tensor[[their_vocab[t] for t in tokens]]
        assert (ours_tensor - theirs_tensor).abs().max() <= 1e-6, name
    for key in ("vocab_size", "num_hidden_layers"):
        our_config = json.loads((ours / "config.json").read_text())
        assert our_config[key] == json.loads((theirs / "config.json").read_text())[key]


@pytest.mark.parametrize(
    "tokenizer",
    [
        {"tokenizer_source": "union"},
        {"tokenizer": {"source": "union", "pad_to_multiple_of": 16}},
        {"tokenizer_source": "base"},
        {"tokenizer": {"source": "union", "tokens": {  # with source base, mergekit 0.1.5 fails (KeyError)
            "<new>": {"source": {"kind": "zero"}},
            "zebra": {"source": {"kind": "model_token", "model": "OTHER", "token": "zebra"}},
            "world": {"source": "OTHER", "force": True},
        }}},
        {"tokenizer_source": "OTHER"},
    ],
    ids=["union", "union-padded", "base", "union-with-tokens", "other-model"],
)  # fmt: skip
def test_output_vocabulary_and_rows_match_mergekit(tokenizer, vocabulary_models, tmp_path):
    text = json.dumps(tokenizer).replace("OTHER", str(vocabulary_models["other"]))
    recipe = _recipe(vocabulary_models, **json.loads(text))
    ours = merge_to_dir(recipe_from_dict(recipe), tmp_path / "ours")
    _assert_same_rows_per_token(ours, _run_mergekit(recipe, tmp_path / "mergekit"))
    model = AutoModelForCausalLM.from_pretrained(ours)
    tokenizer = AutoTokenizer.from_pretrained(ours)
    with torch.no_grad():
        logits = model(tokenizer("hello zebra world", return_tensors="pt")["input_ids"]).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


def test_union_keeps_the_base_ids_and_adds_the_others_tokens(vocabulary_models, tmp_path):
    out = merge_to_dir(recipe_from_dict(_recipe(vocabulary_models, tokenizer_source="union")), tmp_path / "m")
    merged = AutoTokenizer.from_pretrained(out).get_vocab()
    base = AutoTokenizer.from_pretrained(vocabulary_models["base"]).get_vocab()
    other = AutoTokenizer.from_pretrained(vocabulary_models["other"]).get_vocab()
    assert all(merged[token] == token_id for token, token_id in base.items())
    assert set(merged) == set(base) | set(other)
    added = AutoTokenizer.from_pretrained(out).added_tokens_decoder
    assert any(t.content == "<|im_start|>" and t.special for t in added.values())


def test_same_vocabulary_everywhere_keeps_the_rows_as_they_are(family, tokenizer_model, tmp_path):
    """The pipeline's case: a tokenizer_source whose vocabulary the models share (or do not
    declare) leaves the embedding alone, padding rows included."""
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in (family.ft_a, family.ft_b)],
        "tokenizer_source": str(tokenizer_model),
    }
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "m")
    assert load_folder(out)["model.embed_tokens.weight"].shape == (64, 32)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 64
