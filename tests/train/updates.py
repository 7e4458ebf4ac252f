"""Weight updates of a few fine-tuning steps under a given precision, against fp32 training's: for
tests/train/test_precision.py and benchmarks/bench_precision.py."""

import json

import torch

from exme.train.sft import sft_trainer

STEPS = 3
SETTINGS = {
    "learning_rate": 1e-5,
    "max_steps": STEPS,
    "save_steps": STEPS,
    "batch_size": 2,
    "max_seq_length": 48,
    "lr_scheduler_type": "constant",
    "seed": 0,
    "device": "cpu",
}


def write_train_file(path):
    rows = [{"prompt": f"What is {a} plus {a + 1}?\n", "completion": f"{2 * a + 1}"} for a in range(16)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def updates_after_training(real_model, train_file, tmp_path, **precision):
    """(weights before, effective weights after STEPS steps) in fp32; bf16 weights under Kahan
    summation count with their compensation, which holds the part of each update bf16 cannot."""
    trainer = sft_trainer(real_model, train_file, tmp_path / "state", **SETTINGS, **precision)
    before = {name: p.detach().float().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    state = (
        trainer.optimizer.optimizer.state
        if hasattr(trainer.optimizer, "optimizer")
        else trainer.optimizer.state
    )
    after = {}
    for name, parameter in trainer.model.named_parameters():
        compensation = state.get(parameter, {}).get("kahan_comp")
        after[name] = parameter.detach().float() + (compensation.float() if compensation is not None else 0)
    return before, after


def compare_updates(reference, candidate):
    """(fraction of weights changed, relative error of the update against the reference's)."""
    (before_ref, after_ref), (before, after) = reference, candidate
    delta_ref = torch.cat([(after_ref[n] - before_ref[n]).flatten() for n in before_ref])
    delta = torch.cat([(after[n] - before[n]).flatten() for n in before])
    changed = float((delta != 0).float().mean())
    return changed, float((delta - delta_ref).norm() / delta_ref.norm())
