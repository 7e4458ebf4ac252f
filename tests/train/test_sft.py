import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from exme.errors import ExmeError
from exme.train import sft
from exme.train.data import read_sft_records
from exme.train.sft import (
    IGNORE_INDEX,
    finetune,
    has_resume_state,
    prune_resume_state,
    sft_trainer,
)
from tests.conftest import REPO

SFT = {"learning_rate": 1e-3, "save_steps": 2, "batch_size": 4, "seed": 0, "device": "cpu"}


def _global_step(checkpoint):
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def base_without_pad(tiny_base, tmp_path_factory):
    """The tiny demo base with no pad token in its tokenizer or configs (as Llama-3 and Mistral ship)."""
    path = tmp_path_factory.mktemp("nopad") / "base"
    shutil.copytree(tiny_base, path)
    for name in ("config.json", "generation_config.json"):
        config = json.loads((path / name).read_text())
        config.pop("pad_token_id", None)
        (path / name).write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token is None
    return path


def test_finetune_exports_steps_and_resumes(tiny_base, demo_data, tmp_path):
    out_dir, state_dir = tmp_path / "sft", tmp_path / "state"
    train = demo_data / "sft_train.jsonl"

    assert finetune(tiny_base, train, out_dir, state_dir, max_steps=4, **SFT) == [2, 4]
    assert sorted(p.name for p in out_dir.iterdir()) == ["step-2", "step-4"]
    step_four = load_file(out_dir / "step-4" / "model.safetensors")
    exported = {path.name for path in (out_dir / "step-4").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"} <= exported
    assert not exported & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}
    # Model weights only, except the newest checkpoint, which keeps what resuming needs.
    assert not (state_dir / "checkpoint-2" / "optimizer.pt").exists()
    assert not (state_dir / "checkpoint-2" / "rng_state.pth").exists()
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {
        p.name for p in (state_dir / "checkpoint-4").iterdir()
    }

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
    assert [(state_dir / f"checkpoint-{s}" / "optimizer.pt").exists() for s in (2, 4, 6, 8)] == [0, 0, 0, 1]
    log = json.loads((state_dir / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, 9))
    reexported = load_file(out_dir / "step-4" / "model.safetensors")
    assert all((step_four[name] == reexported[name]).all() for name in step_four)


def test_a_killed_job_resumes_from_its_newest_complete_checkpoint(tiny_base, demo_data, tmp_path):
    """A kill while checkpoint-6 was being written leaves it without trainer_state.json: the rerun
    deletes it and resumes from checkpoint-4, the one with optimizer state."""
    out_dir, state_dir = tmp_path / "sft", tmp_path / "state"
    train = demo_data / "sft_train.jsonl"
    finetune(tiny_base, train, out_dir, state_dir, max_steps=4, **SFT)
    partial = state_dir / "checkpoint-6"
    partial.mkdir()
    shutil.copy(state_dir / "checkpoint-4" / "model.safetensors", partial)
    assert finetune(tiny_base, train, out_dir, state_dir, max_steps=8, **SFT) == [2, 4, 6, 8]
    log = json.loads((state_dir / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, 9))


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


def test_without_a_pad_token_padding_is_masked_by_position_and_eos_is_trained(base_without_pad, tmp_path):
    """pad = eos (TRL's default for a tokenizer without one); the eos that ends each completion keeps
    its label, the padding after it has none and is out of attention (TRL issue 1623)."""
    rows = [{"prompt": "1+2=", "completion": "3"}, {"prompt": "count a in abca=", "completion": "2"}]
    trainer = sft_trainer(
        base_without_pad,
        _write_jsonl(tmp_path / "d.jsonl", rows),
        tmp_path / "s",
        max_steps=1,
        **SFT | {"save_steps": 1},
    )
    tokenizer = trainer.processing_class
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    short = (
        0 if len(trainer.train_dataset[0]["input_ids"]) < len(trainer.train_dataset[1]["input_ids"]) else 1
    )
    length = len(trainer.train_dataset[short]["input_ids"])
    ids, labels, attention = (batch[key][short].tolist() for key in ("input_ids", "labels", "attention_mask"))
    eos = tokenizer.eos_token_id
    assert ids[length - 1] == eos and labels[length - 1] == eos  # the final eos is trained
    assert all(token == eos for token in ids[length:])  # padding is eos too ...
    assert all(label == IGNORE_INDEX for label in labels[length:])  # ... but out of the loss
    assert attention == [1] * length + [0] * (len(ids) - length)  # ... and out of attention
    prompt_length = len(tokenizer(rows[short]["prompt"])["input_ids"])
    assert labels[:prompt_length] == [IGNORE_INDEX] * prompt_length  # loss on the completion only
    assert labels[prompt_length:length] == ids[prompt_length:length]


def test_a_model_tuned_without_a_pad_token_ends_its_answers_with_eos(base_without_pad, tmp_path):
    rows = [{"prompt": f"{a}+{b}=", "completion": str((a + b) % 10)} for a in range(10) for b in range(10)]
    out = tmp_path / "sft"
    settings = SFT | {
        "learning_rate": 1e-2,
        "batch_size": 16,
        "save_steps": 150,
        "lr_scheduler_type": "constant",
    }
    finetune(
        base_without_pad,
        _write_jsonl(tmp_path / "d.jsonl", rows),
        out,
        tmp_path / "s",
        max_steps=150,
        **settings,
    )
    model = AutoModelForCausalLM.from_pretrained(out / "step-150")
    tokenizer = AutoTokenizer.from_pretrained(out / "step-150")
    ended = 0
    for row in rows[:20]:
        prompt = tokenizer(row["prompt"], return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)[
            0, prompt["input_ids"].shape[1] :
        ]
        ended += generated.tolist()[1:2] == [tokenizer.eos_token_id]  # one answer character, then eos
    assert ended == 20


def test_chat_records_are_rendered_with_the_chat_template(base_without_pad, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_without_pad)
    # Role markers from the demo's character vocabulary: g: system, e: user, a: assistant.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ {'system': 'g:', 'user': 'e:', 'assistant': 'a:'}[m['role']] }}"
        "{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}a:{% endif %}"
    )
    tokenizer.save_pretrained(base_without_pad.parent / "chat")
    for path in base_without_pad.iterdir():
        if not (base_without_pad.parent / "chat" / path.name).exists():
            shutil.copy(path, base_without_pad.parent / "chat")
    messages = [
        {"role": "system", "content": "abc"},
        {"role": "user", "content": "1+2="},
        {"role": "assistant", "content": "3"},
    ]
    data = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    trainer = sft_trainer(
        base_without_pad.parent / "chat", data, tmp_path / "s", max_steps=1, **SFT | {"save_steps": 1}
    )
    example = trainer.train_dataset[0]
    text = tokenizer.decode(example["input_ids"])
    assert text == "g:abce:1+2=a:3</s>"
    trained = [
        i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX
    ]
    assert tokenizer.decode(trained) == "3</s>"  # the assistant's answer and its eos only


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}],
            "unknown role 'bot'",
        ),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "last message must be the assistant's"),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}],
            "content must be",
        ),
        ([{"prompt": "a"}], "needs string fields 'prompt' and 'completion', or a 'messages' list"),
        (
            [
                {"prompt": "a", "completion": "b"},
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            ],
            "mixes prompt/completion and messages",
        ),
    ],
)
def test_bad_records_are_named_with_their_line(tmp_path, rows, message):
    with pytest.raises(ExmeError, match=message):
        read_sft_records(_write_jsonl(tmp_path / "d.jsonl", rows))


def test_chat_data_for_a_tokenizer_without_a_chat_template_is_an_error(tiny_base, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}]}]
    with pytest.raises(ExmeError, match="has no chat template, which the 'messages' records"):
        sft_trainer(tiny_base, _write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "s", max_steps=2, **SFT)


def test_truncation_is_counted_and_a_length_below_every_prompt_is_an_error(tiny_base, tmp_path, capsys):
    rows = [{"prompt": "1+2=", "completion": "3"}, {"prompt": "count a in abcabcabca=", "completion": "4"}]
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    trainer = sft_trainer(tiny_base, data, tmp_path / "s", max_steps=2, max_seq_length=10, **SFT)
    assert (
        "1 of 2 examples were longer than max_seq_length (10 tokens) and were truncated"
        in capsys.readouterr().err
    )
    assert len(trainer.train_dataset) == 1  # the long one lost its completion and was dropped
    with pytest.raises(
        ExmeError, match=r"max_seq_length \(3\) is shorter than every prompt \(the shortest is 4"
    ):
        sft_trainer(tiny_base, data, tmp_path / "s", max_steps=2, max_seq_length=3, **SFT)


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        ({"bf16": True, "fp16": True}, "finetune.bf16 and finetune.fp16 are both true"),
        ({"fp16": True}, "finetune.fp16 mixed precision needs a CUDA GPU"),
        ({"fp16": True, "dtype": "bfloat16"}, "finetune.fp16 mixed precision needs float32 weights"),
        ({"dtype": "fp8"}, "finetune.dtype: 'fp8' is not one of"),
        ({"optim": "no_such_optimizer"}, "finetune: .*no_such_optimizer"),
    ],
)
def test_impossible_precision_settings_are_named(tiny_base, demo_data, tmp_path, precision, message):
    with pytest.raises(ExmeError, match=message):
        sft_trainer(tiny_base, demo_data / "sft_train.jsonl", tmp_path / "s", max_steps=2, **SFT, **precision)


def test_checkpoints_are_in_the_training_dtype(tiny_base, demo_data, tmp_path):
    """bf16 weights with bf16 mixed precision (what fits a 7-8B model on one 80 GB GPU): the series
    is bf16, half the disk of fp32."""
    out = tmp_path / "sft"
    finetune(
        tiny_base,
        demo_data / "sft_train.jsonl",
        out,
        tmp_path / "s",
        max_steps=2,
        **SFT,
        dtype="bfloat16",
        bf16=True,
    )
    weights = load_file(out / "step-2" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}
    assert json.loads((out / "step-2" / "config.json").read_text())["dtype"] == "bfloat16"


def test_bf16_on_a_gpu_without_it_is_named(monkeypatch):
    from exme.train import sft

    monkeypatch.setattr(sft.torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(sft.torch.cuda, "get_device_name", lambda device: "Tesla V100")
    cuda = torch.device("cuda")
    with pytest.raises(ExmeError, match=r"finetune.bf16: this GPU \(Tesla V100\) cannot compute in bfloat16"):
        sft._check_precision(True, False, torch.float32, cuda)
    with pytest.raises(ExmeError, match=r"finetune.dtype: this GPU \(Tesla V100\)"):
        sft._check_precision(False, False, torch.bfloat16, cuda)
    sft._check_precision(False, True, torch.float32, cuda)  # fp16 is the way there


MODEL_FILES = ["config.json", "model.safetensors"]
# What the Trainer writes beside a checkpoint's model, in each layout (under FSDP: accelerate's
# save_fsdp_model and save_fsdp_optimizer, full or sharded state dict, with or without DCP).
RESUME_LAYOUTS = {
    "one process": ["optimizer.pt", "scheduler.pt", "rng_state.pth"],
    "DDP": ["optimizer.pt", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"],
    "FSDP, full state dict": ["pytorch_model_fsdp.bin", "optimizer.bin", "scheduler.pt", "rng_state_0.pth"],
    "FSDP, sharded": [
        "pytorch_model_fsdp_0/.metadata",
        "pytorch_model_fsdp_0/__0_0.distcp",
        "optimizer_0/.metadata",
        "optimizer_0/__0_0.distcp",
        "scheduler.pt",
        "rng_state_0.pth",
    ],
    "FSDP, sharded per rank": [
        "pytorch_model_fsdp_0_rank0.bin",
        "pytorch_model_fsdp_0_rank1.bin",
        "optimizer_0_rank0.bin",
        "optimizer_0_rank1.bin",
        "scheduler.pt",
    ],
    "DeepSpeed": ["global_step4/mp_rank_00_model_states.pt", "scheduler.pt", "rng_state_0.pth"],
}
TRAINER_BOOKKEEPING = ["trainer_state.json", "training_args.bin"]


@pytest.mark.parametrize(
    ("layout", "state_dict_type", "processes"),
    [("FSDP, full state dict", "FULL_STATE_DICT", 1), ("FSDP, sharded", "SHARDED_STATE_DICT", 2)],
)
def test_the_fsdp_layouts_are_what_accelerate_writes(tiny_base, tmp_path, layout, state_dict_type, processes):
    """accelerate's own FSDP checkpoint writers, run with torch's FSDP on the CPU (the full state
    dict's optimizer gather crashes gloo with 2 processes, so it runs with 1)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    command += [
        str(REPO / "tests/train/write_fsdp_checkpoint.py"),
        str(tiny_base),
        str(tmp_path),
        state_dict_type,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = {path.name for path in tmp_path.iterdir()}
    expected = {name.split("/")[0] for name in RESUME_LAYOUTS[layout]} - {"scheduler.pt", "rng_state_0.pth"}
    assert written == expected


def _files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize("layout", RESUME_LAYOUTS)
def test_resume_state_in_each_layout_is_found_kept_in_the_newest_checkpoint_only_and_not_exported(
    tmp_path, layout
):
    state_dir = tmp_path / "state"
    for step in (2, 4):
        for name in [*MODEL_FILES, *TRAINER_BOOKKEEPING, *RESUME_LAYOUTS[layout]]:
            path = state_dir / f"checkpoint-{step}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)
    older, newest = state_dir / "checkpoint-2", state_dir / "checkpoint-4"
    assert has_resume_state(newest)
    prune_resume_state(state_dir)
    assert _files(older) == sorted([*MODEL_FILES, *TRAINER_BOOKKEEPING])
    assert not has_resume_state(older)
    assert _files(newest) == sorted([*MODEL_FILES, *TRAINER_BOOKKEEPING, *RESUME_LAYOUTS[layout]])
    sft._export(newest, tmp_path / "step-4")
    assert _files(tmp_path / "step-4") == MODEL_FILES  # one copy of the model, no FSDP copy beside it


def test_the_model_is_loaded_after_torch_distributed_is_set_up(tiny_base, demo_data, tmp_path, monkeypatch):
    """accelerate's state (which starts torch.distributed in a multi-process job) exists when the
    weights are read: transformers' FSDP RAM-efficient loading then has the other processes load
    nothing."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    set_up_at_load = []
    load = sft.AutoModelForCausalLM.from_pretrained

    def recording_load(*args, **kwargs):
        set_up_at_load.append(bool(PartialState._shared_state))
        return load(*args, **kwargs)

    monkeypatch.setattr(sft.AutoModelForCausalLM, "from_pretrained", recording_load)
    sft_trainer(tiny_base, demo_data / "sft_train.jsonl", tmp_path / "s", max_steps=2, **SFT)
    assert set_up_at_load == [True]


@pytest.mark.parametrize(("fsdp", "trainer_checkpoints"), [(True, False), (False, True)])
def test_under_fsdp_activation_checkpointing_is_left_to_fsdp(
    tiny_base, demo_data, tmp_path, monkeypatch, fsdp, trainer_checkpoints
):
    """What `accelerate launch --fsdp_activation_checkpointing true` sets in each process: the
    Trainer's own checkpointing (a second all-gather per layer under FSDP) is then off."""
    if fsdp:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
        monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    trainer = sft_trainer(
        tiny_base,
        demo_data / "sft_train.jsonl",
        tmp_path / "s",
        max_steps=2,
        gradient_checkpointing=True,
        **SFT,
    )
    assert trainer.args.activation_checkpointing is trainer_checkpoints
