"""The command the finetune rule runs: one process, or `accelerate launch` with one per GPU."""

import subprocess
import sys

import pytest
import torch
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from exme.errors import ExmeError
from exme.train.launch import (
    TRAINING_MODULE,
    gpu_processes,
    launch_command,
    process_threads,
    training_arguments,
)
from tests.conftest import REPO

FSDP_CONFIG = REPO / "config/accelerate/fsdp.yaml"
ARGUMENTS = ["base", "train.jsonl", "sft", "state", "--settings", "{}", "--threads", "4"]


def parsed_by_accelerate(command):
    """What `accelerate launch` makes of the command (its own parser and config-file merging)."""
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args, *_ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    return args


@pytest.mark.parametrize("n_gpus", [0, 1])
def test_up_to_one_gpu_trains_in_a_single_process(n_gpus):
    assert launch_command(n_gpus, ARGUMENTS) == [sys.executable, "-m", TRAINING_MODULE, *ARGUMENTS]


def test_eight_gpus_run_eight_data_parallel_processes_of_the_training_module():
    args = parsed_by_accelerate(launch_command(8, ARGUMENTS))
    assert (args.multi_gpu, args.use_fsdp, args.num_processes, args.num_machines) == (True, False, 8, 1)
    assert (args.module, args.training_script) == (True, TRAINING_MODULE)
    assert args.training_script_args == ARGUMENTS
    assert args.mixed_precision == "no"


def test_eight_gpus_with_the_fsdp_config_shard_the_model_in_bf16():
    args = parsed_by_accelerate(launch_command(8, ARGUMENTS, fsdp_config=FSDP_CONFIG, bf16=True))
    assert (args.use_fsdp, args.multi_gpu, args.num_processes) == (True, False, 8)  # not the file's 2
    assert args.mixed_precision == "bf16"  # the command line's, not the file's "no"
    # Full weights in each checkpoint: the rule exports checkpoints as model folders.
    assert args.fsdp_state_dict_type == "FULL_STATE_DICT"
    assert args.training_script == TRAINING_MODULE and args.module


@pytest.mark.parametrize("state_dict_type", ["SHARDED_STATE_DICT", None])
def test_an_fsdp_config_that_saves_no_full_weights_is_named(tmp_path, state_dict_type):
    config = yaml.safe_load(FSDP_CONFIG.read_text())
    config["fsdp_config"].pop("fsdp_state_dict_type")
    if state_dict_type:
        config["fsdp_config"]["fsdp_state_dict_type"] = state_dict_type
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        ExmeError, match=rf"fsdp.yaml has fsdp_state_dict_type {state_dict_type}; .* FULL_STATE_DICT"
    ):
        launch_command(8, ARGUMENTS, fsdp_config=tmp_path / "fsdp.yaml")
    with pytest.raises(ExmeError, match="cluster.fsdp_config: .*missing.yaml does not exist"):
        launch_command(8, ARGUMENTS, fsdp_config=tmp_path / "missing.yaml")


@pytest.mark.parametrize("checkpointing", [True, False])
def test_under_fsdp_activation_checkpointing_is_fsdps_own(checkpointing):
    """finetune.gradient_checkpointing reaches each process as accelerate's FSDP setting (which the
    training process then leaves to FSDP, see test_sft), whatever the config file says."""
    command = launch_command(8, ARGUMENTS, fsdp_config=FSDP_CONFIG, activation_checkpointing=checkpointing)
    environment = prepare_multi_gpu_env(parsed_by_accelerate(command))
    assert environment["ACCELERATE_USE_FSDP"] == "true"
    assert environment["FSDP_ACTIVATION_CHECKPOINTING"] == str(checkpointing).lower()
    # The model is loaded after torch.distributed is set up, so that this takes effect (see test_sft).
    assert environment["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"


def test_each_launch_rendezvous_on_a_free_port():
    """Not accelerate's default port 29500, which two multi-GPU jobs on one node would share."""
    args = parsed_by_accelerate(launch_command(2, ARGUMENTS))
    assert args.main_process_port == 0  # accelerate's "pick a free port"
    prepare_multi_gpu_env(args)
    assert args.master_port.isdigit() and args.master_port not in ("0", "29500")  # what torchrun gets


def test_a_torch_without_cuda_trains_in_one_process_on_the_cpu():
    assert not torch.backends.cuda.is_built()  # this machine's torch; a test cluster's GPUs are fake
    assert gpu_processes(8) == 0


@pytest.mark.parametrize("visible", [0, 4])
def test_a_job_that_sees_fewer_gpus_than_it_asked_for_stops_naming_both(monkeypatch, visible):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(visible))))
    with pytest.raises(
        ExmeError, match=rf"asked for 8 GPUs \(resources.finetune.gpu\) but CUDA sees {visible} "
    ):
        gpu_processes(8)
    assert gpu_processes(visible) == visible


@pytest.mark.parametrize(("job_threads", "processes", "each"), [(64, 8, 8), (8, 0, 8), (8, 1, 8), (4, 8, 1)])
def test_each_process_gets_its_share_of_the_jobs_cpu_threads(job_threads, processes, each):
    assert process_threads(job_threads, processes) == each


def test_the_single_process_path_fine_tunes_on_the_cpu(tiny_base, demo_data, tmp_path):
    settings = {"learning_rate": 1e-3, "max_steps": 4, "save_steps": 2, "batch_size": 4, "seed": 0}
    arguments = training_arguments(
        tiny_base,
        demo_data / "sft_train.jsonl",
        tmp_path / "sft",
        tmp_path / "state",
        threads=1,
        settings={**settings, "bf16": False, "gradient_checkpointing": True},
    )
    result = subprocess.run(launch_command(gpu_processes(1), arguments), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "sft").iterdir()) == ["step-2", "step-4"]


def test_the_training_process_reports_bad_settings_in_one_line(tiny_base, demo_data, tmp_path):
    settings = {"learning_rate": 1e-3, "max_steps": 3, "save_steps": 2, "batch_size": 4, "seed": 0}
    arguments = training_arguments(
        tiny_base, demo_data / "sft_train.jsonl", tmp_path / "o", tmp_path / "s", threads=1, settings=settings
    )
    result = subprocess.run(launch_command(1, arguments), capture_output=True, text=True)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: max_steps (3) must be a positive multiple")
