"""Integer buffers are copied when the models agree; chat templates reach the output tokenizer."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


def _with_buffer(model: Path, destination: Path, name: str, buffer: torch.Tensor) -> Path:
    shutil.copytree(model, destination)
    tensors = load_file(destination / "model.safetensors")
    save_file({**tensors, name: buffer}, destination / "model.safetensors", metadata={"format": "pt"})
    return destination


@pytest.fixture(scope="module")
def bert_models(tmp_path_factory) -> list[Path]:
    """Tiny BERTs whose checkpoints hold the int64 position_ids buffer, as older BERT files do."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=40)  # fmt: skip
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        path = root / f"bert_{seed}"
        BertModel(config).save_pretrained(path)
        tensors = load_file(path / "model.safetensors")
        tensors["embeddings.position_ids"] = torch.arange(40)[None]
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
        models.append(path)
    return models


def test_bert_position_ids_are_copied_and_the_rest_merged(bert_models, tmp_path):
    """(mergekit 0.1.5 cannot plan these BERTs: its optional-weight check fails with a TypeError.)"""
    from transformers import BertModel

    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(m), "parameters": {"weight": w}}
            for m, w in zip(bert_models, (1, 2, 1), strict=True)
        ],
    }
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "bert")
    merged, inputs = load_folder(out), [load_folder(m) for m in bert_models]
    assert merged["embeddings.position_ids"].dtype == torch.int64
    assert torch.equal(merged["embeddings.position_ids"], torch.arange(40)[None])
    for name, tensor in merged.items():
        if tensor.is_floating_point():
            expected = (inputs[0][name] + 2 * inputs[1][name] + inputs[2][name]) / 4
            assert (tensor - expected).abs().max() <= 1e-6, name
    assert BertModel.from_pretrained(out).config.num_hidden_layers == 2


def test_equal_buffers_keep_their_dtype_whatever_the_out_dtype(family, tmp_path):
    mask = torch.tensor([True, False, True])
    a = _with_buffer(family.ft_a, tmp_path / "a", "model.mask", mask)
    b = _with_buffer(family.ft_b, tmp_path / "b", "model.mask", mask.clone())
    recipe = {"merge_method": "linear", "out_dtype": "bfloat16",
              "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in (a, b)]}  # fmt: skip
    merged = load_folder(merge_to_dir(recipe_from_dict(recipe), tmp_path / "out"))
    assert merged["model.mask"].dtype == torch.bool and torch.equal(merged["model.mask"], mask)
    assert merged["model.norm.weight"].dtype == torch.bfloat16


def test_differing_buffers_are_an_error_naming_the_tensor(family, tmp_path):
    a = _with_buffer(family.ft_a, tmp_path / "a", "model.ids", torch.arange(4))
    b = _with_buffer(family.ft_b, tmp_path / "b", "model.ids", torch.arange(4).flip(0))
    recipe = {"merge_method": "linear",
              "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in (a, b)]}  # fmt: skip
    with pytest.raises(
        ExmeError, match="tensor 'model.ids' is not floating-point .* differs between the models"
    ):
        build_state_dict(recipe_from_dict(recipe), device="cpu")


def _merge_with_template(models: list[Path], template: str, out: Path) -> Path:
    recipe = {"merge_method": "linear", "chat_template": template,
              "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models]}  # fmt: skip
    return merge_to_dir(recipe_from_dict(recipe), out)


def _rendered(folder: Path) -> str:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("name", ["chatml", "mistral"])
def test_named_templates_render_as_mergekits(name, tokenizer_model, tmp_path):
    from mergekit._data import chat_templates

    theirs = importlib.resources.files(chat_templates).joinpath(f"{name}.jinja").read_text()
    ours = _merge_with_template([tokenizer_model], name, tmp_path / "m")
    reference = AutoTokenizer.from_pretrained(tokenizer_model)
    reference.chat_template = theirs
    assert _rendered(ours) == reference.apply_chat_template(
        CONVERSATION, tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3", "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("alpaca", "Be brief.\n\n### Instruction:\nHi there\n\n### Response:\nHello!\n\n"
                   "### Instruction:\nBye\n\n### Response:\n"),
    ],
)  # fmt: skip
def test_named_templates_render_their_formats(name, expected, tokenizer_model, tmp_path):
    """mergekit's copies of these put a newline after each <|eot_id|>, or none before the last
    response; exme renders the formats as their authors define them."""
    assert _rendered(_merge_with_template([tokenizer_model], name, tmp_path / "m")) == expected


def test_inline_template_is_written_and_replaces_the_source_template(tokenizer_model, tmp_path):
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    out = _merge_with_template([tokenizer_model], template, tmp_path / "m")
    assert (out / "chat_template.jinja").read_text() == template
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
    assert _rendered(out).startswith("[system] Be brief.\n[user] Hi there\n")


def test_auto_template_is_the_one_most_inputs_share(tokenizer_model, tmp_path):
    shared = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    models = []
    for index, template in enumerate([shared, shared, "{{ messages[0]['content'] }} only the first"]):
        model = shutil.copytree(tokenizer_model, tmp_path / f"model_{index}")
        (model / "chat_template.jinja").write_text(template)
        models.append(model)
    out = _merge_with_template(models, "auto", tmp_path / "m")
    assert (out / "chat_template.jinja").read_text() == shared
