import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from exme.demo.base_model import build_tokenizer


def test_tokenizer_is_character_level_and_round_trips(tmp_path):
    tokenizer = build_tokenizer(["12+7 mod 10=9\n", "count a in abca=2\n"])
    text = "count a in 12=7\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.eos_token == "</s>" and reloaded.pad_token == "<pad>"


def test_pretrained_base_folder_loads(tiny_base):
    files = {path.name for path in tiny_base.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json"} <= files
    assert "tokenizer.json" in files
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    generation = json.loads((tiny_base / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id
    assert all(torch.isfinite(p).all() for p in model.parameters())
