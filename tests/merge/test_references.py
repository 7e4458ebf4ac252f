"""Model references beyond local safetensors folders: Hub ids (from the local Hugging Face cache
here, offline), pytorch_model.bin pickles and MODEL+LORA adapters."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml
from safetensors.torch import load_file

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.recipe import recipe_from_dict
from tests.merge.test_mergekit_parity import assert_equal_up_to_rounding
from tests.tiny_models import load_folder

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_model(cache: Path, repo: str, model: Path, revision: str = "main", commit: str = COMMIT) -> None:
    """Lay out a model as huggingface_hub's cache holds a downloaded snapshot."""
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    shutil.copytree(model, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _task_arithmetic(base: str, *models: str) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": base,
        "models": [{"model": m, "parameters": {"weight": 0.6}} for m in models],
        "dtype": "float32",
    }


def test_hub_ids_are_read_from_the_cache_and_named_in_the_model_card(family, hub_cache, tmp_path):
    cache_model(hub_cache, "tiny-org/base", family.base)
    cache_model(hub_cache, "tiny-org/tuned", family.ft_a)
    by_id = recipe_from_dict(_task_arithmetic("tiny-org/base", "tiny-org/tuned"))
    by_path = recipe_from_dict(_task_arithmetic(str(family.base), str(family.ft_a)))
    expected = build_state_dict(by_path, device="cpu")
    out = merge_to_dir(by_id, tmp_path / "merged")
    assert all(torch.equal(load_folder(out)[name], expected[name]) for name in expected)
    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["base_model"] == ["tiny-org/base", "tiny-org/tuned"]
    assert metadata["base_model_relation"] == "merge" and {"merge", "exme"} <= set(metadata["tags"])


def test_hub_revision_selects_that_snapshot(family, hub_cache):
    cache_model(hub_cache, "tiny-org/base", family.base)
    cache_model(hub_cache, "tiny-org/tuned", family.ft_a)
    cache_model(hub_cache, "tiny-org/tuned", family.ft_b, revision="v2", commit="f" * 40)
    at_v2 = build_state_dict(recipe_from_dict(_task_arithmetic("tiny-org/base", "tiny-org/tuned@v2")))
    expected = build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), str(family.ft_b))))
    assert all(torch.equal(at_v2[name], expected[name]) for name in expected)


def test_hub_id_missing_from_the_cache_says_how_to_download_it(family, hub_cache):
    with pytest.raises(ExmeError) as error:
        build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), "tiny-org/absent@v1")))
    message = str(error.value)
    assert "tiny-org/absent@v1" in message and "hf download tiny-org/absent --revision v1" in message


def _as_pickle(model: Path, destination: Path) -> Path:
    destination.mkdir()
    shutil.copy(model / "config.json", destination)
    torch.save(load_file(model / "model.safetensors"), destination / "pytorch_model.bin")
    return destination


def test_pytorch_bin_weights_merge_like_safetensors_and_like_mergekit(family, tmp_path, run_mergekit):
    pickled = _as_pickle(family.ft_a, tmp_path / "pickled")
    recipe = _task_arithmetic(str(family.base), str(pickled), str(family.ft_b))
    ours = build_state_dict(recipe_from_dict(recipe), device="cpu")
    same = build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), str(family.ft_a),
                                                              str(family.ft_b))))  # fmt: skip
    assert all(torch.equal(ours[name], same[name]) for name in same)
    assert_equal_up_to_rounding(ours, run_mergekit(recipe), torch.float32)


class _Payload:
    """Something a weights file must not contain: unpickling it would run code."""


def test_pickle_with_objects_is_refused_without_running_them(family, tmp_path):
    pickled = _as_pickle(family.ft_a, tmp_path / "unsafe")
    state = torch.load(pickled / "pytorch_model.bin")
    torch.save({**state, "extra": _Payload()}, pickled / "pytorch_model.bin")
    with pytest.raises(
        ExmeError, match="cannot be read safely as PyTorch weights.*convert it to safetensors"
    ):
        build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), str(pickled))))


@pytest.fixture(scope="module")
def lora_adapter(family, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "embed_tokens"],
                        init_lora_weights=False)  # fmt: skip
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(family.ft_a), config)
    path = tmp_path_factory.mktemp("lora") / "adapter"
    adapter.save_pretrained(path)
    return path


def test_lora_reference_is_merged_into_its_model_like_peft_and_mergekit(family, lora_adapter, tmp_path):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    recipe = _task_arithmetic(str(family.base), f"{family.ft_a}+{lora_adapter}", str(family.ft_b))
    ours = build_state_dict(recipe_from_dict(recipe), device="cpu")
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True,
                           lora_merge_cache=str(tmp_path / "lora_cache"))  # fmt: skip
    run_merge(MergeConfiguration.model_validate(recipe), str(tmp_path / "mergekit"), options=options)
    assert_equal_up_to_rounding(ours, load_folder(tmp_path / "mergekit"), torch.float32)
    plain = build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), str(family.ft_a),
                                                               str(family.ft_b))))  # fmt: skip
    changed = {name for name in plain if not torch.equal(plain[name], ours[name])}
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed
    assert not any("k_proj" in name or "mlp" in name for name in changed)


def test_dora_adapter_is_refused_by_name(family, lora_adapter, tmp_path):
    adapter = shutil.copytree(lora_adapter, tmp_path / "dora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ExmeError, match="uses use_dora=True, which exme does not merge"):
        build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), f"{family.ft_a}+{adapter}")))


def test_missing_local_folder_is_named_as_such(family, hub_cache, tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ExmeError, match=f"{missing} is neither a folder nor a Hub id"):
        build_state_dict(recipe_from_dict(_task_arithmetic(str(family.base), str(missing))))


def test_a_hub_model_is_linked_into_a_folder_of_the_run(family, hub_cache, tmp_path):
    """download_base: the snapshot's files under the run's path, as links (no second copy)."""
    from exme.merge.io.model_ids import hub_model
    from exme.merge.io.references import link_hub_model

    cache_model(hub_cache, "tiny-org/base", family.base)
    linked = link_hub_model(hub_model("tiny-org/base"), tmp_path / "run" / "base", "model.base")
    files = sorted(path.relative_to(linked) for path in linked.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(family.base) for path in family.base.rglob("*") if path.is_file())
    assert all((linked / name).is_symlink() for name in files)
    weights = [name for name in files if name.suffix == ".safetensors"]
    assert weights and all(
        torch.equal(load_file(linked / name)[key], tensor)
        for name in weights
        for key, tensor in load_file(family.base / name).items()
    )
    with pytest.raises(ExmeError, match="model model.base: tiny-org/absent is not a local folder"):
        link_hub_model(hub_model("tiny-org/absent"), tmp_path / "absent", "model.base")
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/name", "org/name"),
        ("org/name@v2", "org/name@v2"),
        ("name", None),
        ("a/b/c", None),
        ("/abs/x", None),
    ],
)
def test_hub_model_tells_hub_ids_from_paths(text, expected, tmp_path):
    from exme.merge.io.model_ids import hub_model

    assert (str(hub_model(text)) if hub_model(text) else None) == expected
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()  # an existing local folder is a path, never an id
    assert hub_model(str(tmp_path / "org" / "name")) is None


def test_a_cached_hub_model_is_used_where_the_hub_cannot_be_reached(family, hub_cache, tmp_path, monkeypatch):
    """Downloads allowed but the Hub unreachable (a submitting machine without network): the
    cached snapshot, not a connection error."""
    from exme.merge.io.model_ids import hub_model
    from exme.merge.io.references import link_hub_model

    cache_model(hub_cache, "tiny-org/base", family.base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    linked = link_hub_model(hub_model("tiny-org/base"), tmp_path / "base", "model.base")
    assert sorted(path.name for path in linked.iterdir()) == sorted(
        path.name for path in family.base.iterdir()
    )


@pytest.mark.parametrize("intermediate", [False, True], ids=["nested", "intermediate-dir"])
def test_a_named_merge_passes_its_hub_models_on_to_the_final_card(family, hub_cache, tmp_path, intermediate):
    from exme.merge.execute import write_stages
    from exme.merge.multi import load_recipe

    cache_model(hub_cache, "tiny-org/base", family.base)
    cache_model(hub_cache, "tiny-org/tuned", family.ft_a)
    stage = {"name": "stage", **_task_arithmetic("tiny-org/base", "tiny-org/tuned")}
    halves = [{"model": model, "parameters": {"weight": 0.5}} for model in ("stage", str(family.ft_b))]
    final = {"merge_method": "linear", "models": halves}
    recipe_file = tmp_path / "multi.yml"
    recipe_file.write_text(yaml.safe_dump_all([stage, final]))
    recipe = load_recipe(recipe_file)
    if intermediate:
        recipe = replace(recipe, stages=write_stages(recipe.stages, tmp_path / "steps"))
    out = merge_to_dir(recipe, tmp_path / "merged")
    metadata = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert metadata["base_model"] == ["tiny-org/base", "tiny-org/tuned"]
