"""The real (non-demo) path end to end on a small published chat model whose tokenizer has no pad
token: chat SFT data, a generate_until and a multiple_choice lm-eval task, few steps and items."""

import json
import shutil

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.workflow.snakemake_runner import REAL_CONFIG, run_snakemake


@pytest.fixture(scope="module")
def real_run(real_model_without_pad, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("real_run")
    shutil.copytree(REAL_CONFIG.parent / "real", workdir / "real")
    (workdir / "real/base").symlink_to(real_model_without_pad)
    result = run_snakemake(workdir, REAL_CONFIG)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_the_real_path_runs_end_to_end_with_both_kinds_of_task(real_run):
    out = real_run / "results/real"
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["task"]) == {"real_qa", "real_choice"}
    assert set(scores["method"]) == {"base", "sft", "expo", "exme"}
    assert scores["value"].between(0, 1).all()
    assert "stderr" in scores and scores["stderr"].notna().all()
    final = json.loads((out / "seed0/eval/test/exme.json").read_text())
    assert final["dtype"] == "bfloat16"  # evaluation.dtype auto: the final model's own (output.dtype)
    runs = {tuple(run["tasks"]): run for run in final["lm_eval_runs"]}
    assert set(runs) == {("real_qa",), ("real_choice",)}  # num_fewshot differs: two lm_eval runs
    assert "--apply_chat_template" in runs[("real_choice",)]["command"]
    assert "--num_fewshot 1" in runs[("real_choice",)]["command"]
    assert (out / "seed0/eval/test/exme.samples/real_choice.jsonl").is_file()
    assert (out / "seed0/eval/test/exme.tasks/real_qa@test.yaml").is_file()


@pytest.mark.slow
def test_fine_tuning_without_a_pad_token_keeps_resume_state_in_the_newest_checkpoint(real_run):
    out = real_run / "results/real"
    assert "no pad token: padding with eos '<|im_end|>'" in (out / "seed0/logs/finetune/sft.log").read_text()
    (state_dir,) = (out / "seed0/finetune_state/sft").iterdir()
    assert not (state_dir / "checkpoint-1/optimizer.pt").exists()
    assert (state_dir / "checkpoint-2/optimizer.pt").is_file()
    assert sorted(p.name for p in (out / "seed0/finetune/sft").glob("step-*")) == ["step-1", "step-2"]
    assert not (out / "seed0/finetune/sft/step-2/optimizer.pt").exists()


@pytest.mark.slow
def test_the_final_model_loads_and_generates(real_run):
    final = real_run / "results/real/seed0/final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert model.dtype == torch.bfloat16
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    assert tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
