"""A real client: configs of the shapes in mergekit's examples/ folder (examples/mergekit,
written for this project with local tiny models in place of Hub ids) run through `exme merge`.

Each file's first line says what to expect: `# exme: matches mergekit` (a loadable model that agrees
with mergekit 0.1.5), `# exme: matches mergekit but at the top-k cut-off` (the same, but for the few
entries selected differently at TIES's density cut-off: mergekit selects from task vectors computed
in float16, exme from exact differences of the float16-rounded inputs), `# exme: random: ...` (the
same tensors as mergekit's, values drawn by other random masks) or `# exme: fails: TEXT` (an error
naming the unsupported feature).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exme.merge.cli import main
from tests.tiny_models import load_folder, load_model

EXAMPLES = sorted((Path(__file__).parents[2] / "examples/mergekit").glob("*.yml"))
# mergekit computes in the recipe's dtype (float16, bfloat16) where exme rounds fp32 results once:
# both are then within a few of that dtype's ulps (of the tensor's largest entry) of each other.
ULPS = 4
AT_CUTOFF = 0.001  # fraction of entries that may differ at a top-k cut-off


def _expectation(example: Path) -> str:
    first_line = example.read_text().splitlines()[0]
    assert first_line.startswith("# exme: "), f"{example.name} does not say what to expect"
    return first_line.removeprefix("# exme: ")


@pytest.fixture
def models_here(tmp_path, four_layer_models, vocabulary_models, vision_language_models, monkeypatch) -> Path:
    """The examples' ./base, ./ft_a ... ./vocab_other, ./vl_base ..., in the working directory."""
    for prefix, models in (
        ("", four_layer_models),
        ("vocab_", vocabulary_models),
        ("vl_", vision_language_models),
    ):
        for name, path in models.items():
            (tmp_path / f"{prefix}{name}").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_mergekit(example: Path, out: Path) -> dict[str, torch.Tensor]:
    """mergekit-yaml's result, or for a multi-document recipe mergekit-multi's final merge (the
    unnamed one, else the last)."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    documents = list(yaml.safe_load_all(example.read_text()))
    if len(documents) == 1:
        config = MergeConfiguration.model_validate(documents[0])
        run_merge(config, str(out), options=MergeOptions(write_model_card=False, quiet=True))
        return load_folder(out)
    from click.testing import CliRunner
    from mergekit.scripts.multimerge import main as mergekit_multi

    intermediates = out.parent / "mergekit_intermediates"
    arguments = [str(example), "--intermediate-dir", str(intermediates), "--out-path", str(out), "--quiet"]
    result = CliRunner().invoke(mergekit_multi, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    unnamed = any(document.get("name") is None for document in documents)
    return load_folder(out if unnamed else intermediates / documents[-1]["name"])


def _rows_by_token(folder: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Vocabulary tensors with their rows in token order: mergekit numbers a union's new tokens in
    hash order."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").exists():
        return tensors
    vocabulary = AutoTokenizer.from_pretrained(folder).get_vocab()
    order = [vocabulary[token] for token in sorted(vocabulary)]
    return {n: t[order] if t.shape[0] == len(order) else t for n, t in tensors.items()}


def _assert_close(ours: dict, theirs: dict, expectation: str) -> None:
    assert ours.keys() == theirs.keys()
    differing = total = 0
    for name, expected in theirs.items():
        actual = ours[name]
        assert (actual.shape, actual.dtype) == (expected.shape, expected.dtype), name
        if expectation.startswith("random"):
            continue
        tolerance = ULPS * torch.finfo(expected.dtype).eps * expected.float().abs().max()
        too_far = (actual.float() - expected.float()).abs() > max(float(tolerance), 1e-6)
        differing, total = differing + int(too_far.sum()), total + too_far.numel()
        if expectation == "matches mergekit":
            assert not too_far.any(), f"{name}: {int(too_far.sum())} of {too_far.numel()} entries differ"
    assert differing <= AT_CUTOFF * total, f"{differing} of {total} entries differ"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_mergekit_example(example, models_here, capsys):
    expectation = _expectation(example)
    code = main(["merge", str(example), "out", "--no-progress"])
    stderr = capsys.readouterr().err
    if expectation.startswith("fails: "):
        assert code == 2 and expectation.removeprefix("fails: ") in stderr, stderr
        return
    assert code == 0, stderr
    model = load_model(models_here / "out")
    with torch.no_grad():
        assert torch.isfinite(model(torch.arange(6)[None]).logits).all()
    theirs = _run_mergekit(example, models_here / "mergekit_out")
    ours = _rows_by_token(models_here / "out", load_folder(models_here / "out"))
    _assert_close(ours, _rows_by_token(models_here / "mergekit_out", theirs), expectation)
