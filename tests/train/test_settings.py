"""The fine-tuning rules that the config check and the trainer share: each bad setting is named,
and the module loads without torch (the config check runs while Snakemake builds the DAG)."""

import subprocess
import sys

import pytest

from exme.errors import ExmeError
from exme.train.settings import (
    check_fp16_weights,
    check_max_seq_length,
    check_mixed_precision,
    check_steps,
    check_warmup_steps,
)


@pytest.mark.parametrize(
    ("max_steps", "save_steps", "section", "message"),
    [
        (4, 3, None, "^max_steps (4) must be a positive multiple of save_steps (3)$"),
        (6, 4, "finetune", "^finetune: max_steps (6) must be a positive multiple of save_steps (4)$"),
        (2, 0, "expert_finetune", "^expert_finetune: max_steps (2) must be a positive multiple"),
        (0, 2, None, "^max_steps (0) must be"),
    ],
)
def test_max_steps_must_be_a_positive_multiple_of_save_steps(max_steps, save_steps, section, message):
    with pytest.raises(ExmeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_steps(max_steps, save_steps, section)


def test_settings_that_can_train_pass():
    check_steps(6, 3)
    check_steps(3, 3, "expert_finetune")
    check_max_seq_length(2)
    for warmup_steps in (0, 10, 0.03, 5.0):
        check_warmup_steps(warmup_steps)
    check_mixed_precision(True, False)
    check_fp16_weights(True, "float32")
    check_fp16_weights(False, "auto")


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: check_max_seq_length(1), r"finetune.max_seq_length \(1\) must be at least 2"),
        (lambda: check_warmup_steps(2.5), r"finetune.warmup_steps \(2.5\): a number of steps"),
        (lambda: check_mixed_precision(True, True), "finetune.bf16 and finetune.fp16 are both true"),
        # As set, "auto" (the folder's own dtype) is not known to be float32.
        (
            lambda: check_fp16_weights(True, "auto"),
            r"needs finetune.dtype: float32 \(got auto\); .* Use bf16 instead$",
        ),
        (
            lambda: check_fp16_weights(True, "bfloat16", loaded=True),
            r"needs float32 weights \(finetune.dtype gives bfloat16\); .* with bfloat16 weights instead$",
        ),
    ],
)
def test_each_bad_setting_is_named(check, message):
    with pytest.raises(ExmeError, match=message):
        check()


def test_the_rules_load_without_torch_transformers_or_trl():
    code = (
        "import sys, exme.train.settings; print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
