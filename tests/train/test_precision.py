"""Training precision on a real model at the paper's learning rate (1e-5): fp32 master weights with
bf16 compute, and bf16 weights with Kahan-compensated AdamW, change the weights as fp32 training
does; plain AdamW on bf16 weights drops most updates, and says how many."""

import pytest
import torch

from exme.train.sft import KAHAN_ADAMW, dropped_update_fraction
from tests.train.updates import compare_updates as _compare
from tests.train.updates import updates_after_training as _updates
from tests.train.updates import write_train_file


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_train_file(tmp_path_factory.mktemp("precision") / "train.jsonl")


@pytest.fixture(scope="module")
def fp32_training(real_model, train_file, tmp_path_factory):
    return _updates(real_model, train_file, tmp_path_factory.mktemp("fp32"), dtype="float32")


@pytest.mark.slow
def test_fp32_master_weights_with_bf16_compute_update_as_fp32_training(
    real_model, train_file, fp32_training, tmp_path
):
    changed_ref, _ = _compare(fp32_training, fp32_training)
    changed, error = _compare(
        fp32_training, _updates(real_model, train_file, tmp_path, dtype="float32", bf16=True)
    )
    assert changed_ref > 0.95 and changed > 0.95
    assert error < 0.35  # bf16 matmuls perturb the gradients, not which weights move


@pytest.mark.slow
def test_bf16_weights_with_kahan_adamw_update_as_fp32_training(
    real_model, train_file, fp32_training, tmp_path
):
    kahan = _updates(real_model, train_file, tmp_path, dtype="bfloat16", bf16=True, optim=KAHAN_ADAMW)
    changed, error = _compare(fp32_training, kahan)
    assert changed > 0.95
    assert error < 0.35


@pytest.mark.slow
def test_plain_adamw_on_bf16_weights_drops_most_updates_and_warns_with_the_fraction(
    real_model, train_file, fp32_training, tmp_path, capsys
):
    plain = _updates(real_model, train_file, tmp_path, dtype="bfloat16", bf16=True, optim="adamw_torch")
    changed, _ = _compare(fp32_training, plain)
    assert changed < 0.2
    warning = next(line for line in capsys.readouterr().err.splitlines() if "rounds away" in line)
    estimate = float(warning.split("rounds away on ")[1].split("%")[0]) / 100
    assert estimate > 0.8 and "finetune.optim: adamw_kahan" in warning


def test_the_dropped_fraction_counts_weights_an_update_cannot_change():
    # bf16 keeps 8 significant bits: next to 1.0 its spacing is 2**-7, so 1e-3 rounds away and
    # 1e-2 does not; next to 1e-3 both are kept. fp32 weights drop nothing.
    model = torch.nn.Linear(2, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1e-3]]))
    assert dropped_update_fraction(model, 1e-3) == 0.5
    assert dropped_update_fraction(model, 1e-2) == 0.0
    assert dropped_update_fraction(model.float(), 1e-9) == 0.0
