"""`torchrun --nproc_per_node N write_fsdp_checkpoint.py MODEL_DIR OUT_DIR STATE_DICT_TYPE`: the files
accelerate's save_fsdp_model and save_fsdp_optimizer (what the Trainer calls under FSDP) write for
a model after one optimizer step, with torch's FSDP on the CPU (gloo)."""

import sys

import torch
import torch.distributed as dist
from accelerate.state import PartialState
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import save_fsdp_model, save_fsdp_optimizer
from torch.distributed.fsdp import FullyShardedDataParallel
from transformers import AutoModelForCausalLM


def main(model_dir: str, out_dir: str, state_dict_type: str) -> None:
    state = PartialState(cpu=True)
    model = FullyShardedDataParallel(
        AutoModelForCausalLM.from_pretrained(model_dir), device_id=torch.device("cpu"), use_orig_params=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=1, state_dict_type=state_dict_type, sync_module_states=False
    )
    save_fsdp_model(plugin, state, model, out_dir)
    save_fsdp_optimizer(plugin, state, optimizer, model, out_dir)
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:])
