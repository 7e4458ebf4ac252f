"""Loading models for evaluation: folders and in-memory recipes give the same weights as the formula."""

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from exme.errors import ExmeError
from exme.evaluate.models import load_model, load_recipe_model
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import save_llama


@pytest.fixture
def tiny_models(family):
    return {"base": family.base, "a": family.ft_a, "b": family.ft_b}


def test_a_recipe_model_holds_the_exme_formula(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr("exme.evaluate.models.AutoTokenizer.from_pretrained", lambda path: None)
    recipe = {
        "merge_method": "exme",
        "base_model": str(tiny_models["base"]),
        "models": [
            {"model": str(tiny_models["a"]), "parameters": {"alpha": 0.3, "weight": 0.6}},
            {"model": str(tiny_models["b"]), "parameters": {"alpha": 0.1, "weight": 0.4}},
        ],
    }
    path = tmp_path / "exme.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model, _ = load_model(path, torch.device("cpu"))
    weights = {n: LlamaForCausalLM.from_pretrained(p).state_dict() for n, p in tiny_models.items()}
    for name, tensor in model.state_dict().items():
        base, a, b = (weights[n][name] for n in ("base", "a", "b"))
        expected = 0.6 * (a + 0.3 * (a - base)) + 0.4 * (b + 0.1 * (b - base))
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-6)


def test_a_model_folder_with_nan_weights_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("exme.evaluate.harness.AutoTokenizer.from_pretrained", lambda path: None)
    path = save_llama(tmp_path / "nan", 3)
    model = LlamaForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(path)
    with pytest.raises(ExmeError, match=r"tensor model\.norm\.weight holds NaN"):
        load_model(path, torch.device("cpu"))


def test_a_recipe_of_recipes_loads_with_the_config_of_its_leaf_folders(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr("exme.evaluate.models.AutoTokenizer.from_pretrained", lambda path: path)
    inner = {
        "merge_method": "task_arithmetic",
        "base_model": str(tiny_models["base"]),
        "models": [{"model": str(tiny_models["a"]), "parameters": {"weight": 1.0}}],
    }
    (tmp_path / "inner.yaml").write_text(yaml.safe_dump(inner))
    outer = {**inner, "models": [{"model": str(tmp_path / "inner.yaml"), "parameters": {"weight": 2.0}}]}
    (tmp_path / "outer.yaml").write_text(yaml.safe_dump(outer))
    model, tokenizer_folder = load_model(tmp_path / "outer.yaml", torch.device("cpu"))
    assert tokenizer_folder == tiny_models["base"]
    weights = {n: LlamaForCausalLM.from_pretrained(p).state_dict() for n, p in tiny_models.items()}
    for name, tensor in model.state_dict().items():
        expected = 2 * weights["a"][name] - weights["base"][name]
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-6)


def test_a_slices_recipe_loads_with_the_number_of_layers_it_merges(tiny_models, monkeypatch):
    monkeypatch.setattr("exme.evaluate.models.AutoTokenizer.from_pretrained", lambda path: path)
    recipe = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(tiny_models["a"]), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(tiny_models["b"]), "layer_range": [1, 2]}]},
        ],
    }
    model, _ = load_recipe_model(recipe_from_dict(recipe), torch.device("cpu"))
    assert model.config.num_hidden_layers == 3
    weights = {n: LlamaForCausalLM.from_pretrained(p).state_dict() for n, p in tiny_models.items()}
    state = model.state_dict()
    torch.testing.assert_close(
        state["model.layers.2.mlp.up_proj.weight"], weights["b"]["model.layers.1.mlp.up_proj.weight"]
    )
    torch.testing.assert_close(
        state["model.layers.1.mlp.up_proj.weight"], weights["a"]["model.layers.1.mlp.up_proj.weight"]
    )
    torch.testing.assert_close(state["lm_head.weight"], weights["b"]["lm_head.weight"])
