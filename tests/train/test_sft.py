import json

import pytest
from safetensors.torch import load_file

from exme.errors import ExmeError
from exme.train.sft import finetune

SFT = {"learning_rate": 1e-3, "save_steps": 2, "batch_size": 4, "seed": 0, "device": "cpu"}


def _global_step(checkpoint):
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


def test_finetune_exports_steps_and_resumes(tiny_base, demo_data, tmp_path):
    out_dir, state_dir = tmp_path / "sft", tmp_path / "state"
    train = demo_data / "sft_train.jsonl"

    assert finetune(tiny_base, train, out_dir, state_dir, max_steps=4, **SFT) == [2, 4]
    assert sorted(p.name for p in out_dir.iterdir()) == ["step-2", "step-4"]
    step_four = load_file(out_dir / "step-4" / "model.safetensors")
    assert not (out_dir / "step-4" / "optimizer.pt").exists()
    exported = {path.name for path in (out_dir / "step-4").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= exported

    # A longer run over the same state dir continues from checkpoint-4 instead of restarting:
    # a restart would rewrite checkpoint-2 and checkpoint-4.
    def mtimes():
        return {
            step: (state_dir / f"checkpoint-{step}" / "model.safetensors").stat().st_mtime_ns
            for step in (2, 4)
        }

    before = mtimes()
    assert _global_step(state_dir / "checkpoint-4") == 4
    assert finetune(tiny_base, train, out_dir, state_dir, max_steps=8, **SFT) == [2, 4, 6, 8]
    assert mtimes() == before
    assert _global_step(state_dir / "checkpoint-8") == 8
    log = json.loads((state_dir / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, 9))
    reexported = load_file(out_dir / "step-4" / "model.safetensors")
    assert all((step_four[name] == reexported[name]).all() for name in step_four)


def test_finetune_rejects_misaligned_steps(tiny_base, demo_data, tmp_path):
    with pytest.raises(ExmeError, match="multiple of save_steps"):
        finetune(
            tiny_base,
            demo_data / "sft_train.jsonl",
            tmp_path / "o",
            tmp_path / "s",
            **{**SFT, "save_steps": 3},
            max_steps=4,
        )
