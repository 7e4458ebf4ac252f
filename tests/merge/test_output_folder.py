"""The merged folder is a complete Hugging Face model folder recording its recipe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder, write_yaml


def _linear(*models, **extra) -> dict:
    return {
        "merge_method": "linear",
        "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models],
        **extra,
    }


def test_small_shard_size_writes_shards_and_an_index(family, tmp_path):
    out = merge_to_dir(recipe_from_dict(_linear(family.ft_a, family.ft_b)), tmp_path / "m",
                       shard_size="20KB")  # fmt: skip
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert all(s.stat().st_size <= 20_000 + 1_000 for s in shards)  # data plus a small header
    written = {n: t for s in shards for n, t in load_file(s).items()}
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in written.values())
    expected = build_state_dict(recipe_from_dict(_linear(family.ft_a, family.ft_b)), device="cpu")
    assert all(torch.equal(written[n], expected[n]) for n in expected)
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0


def test_single_shard_output_loads_with_transformers_in_the_output_dtype(family, tmp_path):
    recipe = recipe_from_dict(_linear(family.ft_a, family.ft_b, out_dtype="bfloat16"))
    out = merge_to_dir(recipe, tmp_path / "m")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert model.dtype == torch.bfloat16
    assert torch.equal(model.model.norm.weight, load_folder(out)["model.norm.weight"])


def test_tokenizer_files_are_copied_from_the_tokenizer_source(family, tokenizer_model, tmp_path):
    recipe = _linear(family.ft_a, family.ft_b, tokenizer_source=str(tokenizer_model))
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "m")
    assert (out / "tokenizer.json").read_bytes() == (tokenizer_model / "tokenizer.json").read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (
        tokenizer("hello world")["input_ids"]
        == AutoTokenizer.from_pretrained(tokenizer_model)("hello world")["input_ids"]
    )


def test_default_tokenizer_source_is_the_base_model(tokenizer_model, family, tmp_path):
    recipe = {
        "merge_method": "extrapolate",
        "base_model": str(tokenizer_model),
        "models": [{"model": str(family.ft_a), "parameters": {"alpha": 0.1}}],
    }
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "m")
    assert (out / "tokenizer_config.json").exists()


def test_model_card_records_method_and_recipe(family, tmp_path):
    recipe = recipe_from_dict(
        {
            "merge_method": "exme",
            "base_model": str(family.base),
            "models": [
                {"model": str(family.ft_a), "parameters": {"alpha": 0.3, "weight": 0.5}},
                {"model": str(family.ft_b), "parameters": {"alpha": 0.2, "weight": 0.5}},
            ],
        }
    )
    out = merge_to_dir(recipe, tmp_path / "merged")
    card = (out / "README.md").read_text()
    assert "ExMe" in card and "https://arxiv.org/abs/2503.04834" in card
    recipe_block = card.split("```yaml\n")[1].split("```")[0]
    assert recipe_from_dict(yaml.safe_load(recipe_block)) == recipe
    assert recipe_from_dict(yaml.safe_load((out / "merge_recipe.yml").read_text())) == recipe


def test_killed_merge_leaves_nothing_under_the_output_name(family, tmp_path):
    recipe = write_yaml(tmp_path / "recipe.yml", _linear(family.ft_a, family.ft_b))
    code = (
        "import os, signal, exme.merge.io.shard_writer as w\n"
        "w._write_tensor = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from exme.merge.cli import main\n"
        f"main(['merge', {str(recipe)!r}, {str(tmp_path / 'out')!r}])\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert process.returncode == -9
    assert not (tmp_path / "out").exists()


def test_all_tied_inputs_give_a_tied_output_without_lm_head(make_family, tmp_path):
    tied = make_family(tied=True)
    out = merge_to_dir(recipe_from_dict(_linear(tied.ft_a, tied.ft_b)), tmp_path / "m")
    assert "lm_head.weight" not in load_folder(out)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


def test_tied_base_contributes_its_embedding_as_lm_head(make_family, tmp_path):
    mixed = make_family(tied_base_only=True)
    recipe = {
        "merge_method": "extrapolate",
        "base_model": str(mixed.base),
        "models": [{"model": str(mixed.ft_a), "parameters": {"alpha": 0.5}}],
    }
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "m")
    merged, base, tuned = load_folder(out), load_folder(mixed.base), load_folder(mixed.ft_a)
    expected = 1.5 * tuned["lm_head.weight"] - 0.5 * base["model.embed_tokens.weight"]
    assert (merged["lm_head.weight"] - expected).abs().max() <= 1e-6
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.lm_head.weight, merged["lm_head.weight"])


def _exme_recipe(family, weights=(0.5, 0.5), **parameters) -> dict:
    return {
        "merge_method": "exme",
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ft_a), "parameters": {"alpha": 0.3, "weight": weights[0]}},
            {"model": str(family.ft_b), "parameters": {"alpha": 0.2, "weight": weights[1]}},
        ],
        "dtype": "float32",
        "random_seed": 4,
        "metadata": {"beta": 0.5},
        **({"parameters": parameters} if parameters else {}),
    }


@pytest.mark.parametrize(
    ("recipe_of", "mergekit_method"),
    [
        (lambda f: _exme_recipe(f), "task_arithmetic"),
        (lambda f: _exme_recipe(f, (1.2, 0.6), normalize=True), "task_arithmetic"),
        (lambda f: _exme_recipe(f, (1.2, 0.6)), "linear"),
        (
            lambda f: {
                **_exme_recipe(f),
                "merge_method": "extrapolate",
                "models": _exme_recipe(f)["models"][:1],
                "parameters": {"alpha": 0.4},
            },
            "task_arithmetic",
        ),  # fmt: skip
        (
            lambda f: {
                **_exme_recipe(f),
                "merge_method": "ties",
                "models": [{"model": str(f.ft_a), "parameters": {"weight": 0.6, "density": 0.5}}],
            },
            "ties",
        ),  # fmt: skip
    ],
)
def test_mergekit_config_reruns_in_mergekit_to_the_same_weights(recipe_of, mergekit_method, family, tmp_path,
                                                                 run_mergekit):  # fmt: skip
    recipe = recipe_of(family)
    if recipe["merge_method"] == "extrapolate":
        recipe["models"] = [{"model": str(family.ft_a)}]
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "m")
    mergekit_config = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert mergekit_config["merge_method"] == mergekit_method
    assert "random_seed" not in mergekit_config and "metadata" not in mergekit_config
    ours, theirs = load_folder(out), run_mergekit(mergekit_config)
    assert ours.keys() == theirs.keys()
    assert all((ours[name] - theirs[name]).abs().max() <= 2e-6 for name in ours)


def test_exme_recipe_with_gradients_has_no_mergekit_form(family, tmp_path):
    recipe = _exme_recipe(family)
    recipe["models"][0]["parameters"]["alpha"] = [0.1, 0.5]
    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "m")
    assert not (out / "mergekit_config.yml").exists()
    assert "mergekit-yaml" not in (out / "README.md").read_text()


def test_model_card_metadata_is_read_by_huggingface_hub(family, tmp_path):
    from huggingface_hub import ModelCard

    out = merge_to_dir(recipe_from_dict(_exme_recipe(family)), tmp_path / "m")
    card = ModelCard.load(out / "README.md")
    assert set(card.data.tags) >= {"merge", "exme"} and card.data.library_name == "transformers"
    # Local folders are not Hub models: the card names them but claims no base_model.
    assert card.data.base_model is None and str(family.ft_a) in card.text
    assert "mergekit-yaml mergekit_config.yml" in card.text
