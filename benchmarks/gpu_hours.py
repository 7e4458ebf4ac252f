"""GPU-hour estimate of the paper reproduction (config/paper/), per base model: an ESTIMATE from
published hardware figures and stated assumptions, not a measurement (no GPU ran these configs).

    python benchmarks/gpu_hours.py            # prints the Markdown table of benchmarks/RESULTS.md

Fine-tuning: 6·N·T FLOPs (forward and backward; x4/3 with gradient checkpointing) at MFU x peak.
Evaluation: per evaluated model, the prompt tokens at prefill speed (2·N FLOPs per token at MFU x
peak) and the generated tokens at decoding speed (batch x the rate at which the GPU streams the
weights once per decoding step, x DECODE_EFFICIENCY for Hugging Face generate's overheads).
The number of evaluated models per split comes from the pipeline's own target lists.
"""

import math
from pathlib import Path

from exme.pipeline.config import merge_config_files
from exme.pipeline.targets import merge_models, models_on_dev, models_on_test
from exme.train.checkpoints import checkpoint_steps

REPO = Path(__file__).resolve().parents[1]
# H100 SXM: dense bf16 peak and HBM bandwidth (NVIDIA's data sheet).
PEAK_FLOPS, HBM_BYTES_PER_S = 989e12, 3.35e12
MFU = 0.35  # assumed model FLOPs utilisation, training and prefill
DECODE_EFFICIENCY = 0.3  # assumed fraction of the bandwidth bound that HF generate reaches
TOKENS_PER_EXAMPLE = 700  # assumed mean SFT example length (Tulu 3 mixture, truncated at 2048)
PARAMETERS = {  # billions, from the model cards
    "google/gemma-2-2b-it": 2.6,
    "meta-llama/Meta-Llama-3-8B-Instruct": 8.0,
    "Qwen/Qwen2-7B-Instruct": 7.6,
    "mistralai/Mistral-Nemo-Instruct-2407": 12.2,
    "Qwen/Qwen1.5-14B-Chat": 14.2,
}
# Per task and split: items, prompt tokens per item (all choices of a multiple-choice item, few-shot
# examples included) and generated tokens per item; sizes from the data sets, tokens assumed.
TASKS = {
    "humaneval": {"dev": 82, "test": 82, "prompt": 150, "generated": 200},
    "mbpp": {"dev": 90, "test": 500, "prompt": 700, "generated": 150},
    "gsm8k": {"dev": 500, "test": 1319, "prompt": 900, "generated": 200},
    "arc_challenge": {"dev": 299, "test": 1172, "prompt": 4 * 60, "generated": 0},
    "hellaswag": {"dev": 2000, "test": 8042, "prompt": 4 * 110, "generated": 0},
    "truthfulqa_mc2": {"dev": 409, "test": 408, "prompt": 8 * 60, "generated": 0},
    "winogrande": {"dev": 634, "test": 633, "prompt": 2 * 40, "generated": 0},
}


def evaluation_hours(params: float, split: str, batch_size: int) -> float:
    prompt = sum(task[split] * task["prompt"] for task in TASKS.values())
    generated = sum(task[split] * task["generated"] for task in TASKS.values())
    prefill_s = prompt * 2 * params / (MFU * PEAK_FLOPS)
    decode_tokens_per_s = batch_size * HBM_BYTES_PER_S / (2 * params) * DECODE_EFFICIENCY  # bf16 weights
    return (prefill_s + generated / decode_tokens_per_s) / 3600


def estimate(model_file: Path) -> dict:
    config = merge_config_files(REPO / "config/config.yaml", REPO / "config/paper/common.yaml", model_file)
    params = PARAMETERS[config["model"]["base"]] * 1e9
    finetune = config["finetune"]
    steps = checkpoint_steps(finetune["max_steps"], finetune["save_steps"])
    tokens = config["data"]["sft_train"]["n_examples"] * TOKENS_PER_EXAMPLE
    recompute = 4 / 3 if finetune["gradient_checkpointing"] else 1
    train_hours = 6 * params * tokens * recompute / (MFU * PEAK_FLOPS) / 3600
    ranks = range(1, config["selection"]["top_k"] + 1)
    alphas, betas = config["extrapolation"]["alpha_grid"], config["merging"]["beta_grid"]
    every = steps if config["extrapolation"]["every_checkpoint"] else []
    merges = merge_models("checkpoint", config["tracks"]["checkpoint"], config["merge_methods"])
    n_dev = len(models_on_dev(steps, ranks, alphas, betas, every) + merges["dev"])
    n_test = len(models_on_test(steps, ranks) + merges["test"])
    batch = config["evaluation"]["batch_size"]
    eval_hours = n_dev * evaluation_hours(params, "dev", batch)
    eval_hours += n_test * evaluation_hours(params, "test", batch)
    gpus = config["resources"]["finetune"]["gpu"]
    return {
        "run": config["run"],
        "parameters": params,
        "gpus": gpus,
        "train": train_hours,
        "n_dev": n_dev,
        "n_test": n_test,
        "eval": eval_hours,
        "total": train_hours + eval_hours,
        "train_wall": train_hours / gpus,
    }


def main() -> None:
    print("| config | parameters | fine-tuning GPU-h (wall on its GPUs) | evaluations dev + test | "
          "evaluation GPU-h | total GPU-h |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for path in sorted((REPO / "config/paper").glob("*.yaml")):
        if path.name == "common.yaml" or path.stem.endswith("-cpu"):  # shared keys; the chain on a CPU
            continue
        row = estimate(path)
        print(
            f"| {row['run']} | {row['parameters'] / 1e9:.1f}B | {row['train']:.1f} "
            f"({row['train_wall']:.1f} h on {row['gpus']}) | {row['n_dev']} + {row['n_test']} | "
            f"{row['eval']:.0f} | {math.ceil(row['total'])} |"
        )


if __name__ == "__main__":
    main()
