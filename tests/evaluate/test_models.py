"""Loading models for evaluation: folders and in-memory recipes give the same weights as the formula."""

import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaForCausalLM

from exme.errors import ExmeError
from exme.evaluate.models import load_model, load_recipe_model
from exme.merge.execute import merge_to_dir
from exme.merge.multi import load_recipe
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import save_llama


@pytest.fixture
def tiny_models(family):
    return {"base": family.base, "a": family.ft_a, "b": family.ft_b}


def _exme_recipe(tiny_models, tmp_path, **extra):
    recipe = {
        "merge_method": "exme",
        "base_model": str(tiny_models["base"]),
        "models": [
            {"model": str(tiny_models["a"]), "parameters": {"alpha": 0.3, "weight": 0.6}},
            {"model": str(tiny_models["b"]), "parameters": {"alpha": 0.1, "weight": 0.4}},
        ],
        **extra,
    }
    path = tmp_path / "exme.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def no_tokenizer(monkeypatch):
    monkeypatch.setattr("exme.evaluate.models.AutoTokenizer.from_pretrained", lambda path: None)


def _formula(tiny_models):
    weights = {n: LlamaForCausalLM.from_pretrained(p).state_dict() for n, p in tiny_models.items()}
    return {
        name: 0.6 * (a + 0.3 * (a - base)) + 0.4 * (b + 0.1 * (b - base))
        for name in weights["base"]
        for base, a, b in [tuple(weights[n][name] for n in ("base", "a", "b"))]
    }


def test_a_recipe_model_holds_the_exme_formula(tiny_models, tmp_path, no_tokenizer):
    model, _ = load_model(_exme_recipe(tiny_models, tmp_path), torch.device("cpu"))
    assert not any(parameter.is_meta for parameter in model.parameters())
    expected = _formula(tiny_models)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-6, atol=1e-6)


def test_a_recipe_model_is_cast_once_from_fp32_to_the_evaluation_dtype(tiny_models, tmp_path, no_tokenizer):
    recipe = _exme_recipe(tiny_models, tmp_path)
    model, _ = load_model(recipe, torch.device("cpu"), dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.config.dtype == torch.bfloat16
    fp32, _ = load_model(recipe, torch.device("cpu"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fp32.state_dict()[name].to(torch.bfloat16)), name


def test_a_recipe_model_equals_the_same_merge_loaded_from_its_folder(tiny_models, tmp_path, no_tokenizer):
    """Built on the meta device and assigned, the recipe model computes what the written folder does:
    same weights, same buffers (rotary frequencies), same logits."""
    recipe_path = _exme_recipe(tiny_models, tmp_path)
    from_recipe, _ = load_model(recipe_path, torch.device("cpu"))
    folder = merge_to_dir(load_recipe(recipe_path), tmp_path / "merged")
    from_folder, _ = load_model(folder, torch.device("cpu"))
    assert from_recipe.dtype == from_folder.dtype == torch.float32
    for (name, a), (_, b) in zip(
        sorted(from_recipe.state_dict().items()), sorted(from_folder.state_dict().items()), strict=True
    ):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(from_recipe.named_buffers(), from_folder.named_buffers(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        assert torch.equal(from_recipe(ids).logits, from_folder(ids).logits)


def test_a_recipe_model_with_a_tied_base_keeps_tied_embeddings(make_family, tmp_path, no_tokenizer):
    family = make_family(tied=True)
    models = {"base": family.base, "a": family.ft_a, "b": family.ft_b}
    model, _ = load_model(_exme_recipe(models, tmp_path), torch.device("cpu"))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_a_model_folder_with_nan_weights_is_an_error(tmp_path, no_tokenizer):
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


def test_the_recipe_tokenizer_is_its_tokenizer_source(tokenizer_model, family, tmp_path):
    recipe = {
        "merge_method": "extrapolate",
        "base_model": str(family.base),
        "models": [{"model": str(family.ft_a), "parameters": {"alpha": 0.5}}],
        "tokenizer_source": str(tokenizer_model),
    }
    path = tmp_path / "expo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _, tokenizer = load_model(path, torch.device("cpu"))
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(tokenizer_model).get_vocab()
