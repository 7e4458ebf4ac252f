"""Which checkpoints fine-tuning saves and where: shared with the workflow, which plans jobs from
them before anything runs (so this module imports no torch)."""


def checkpoint_steps(max_steps: int, save_steps: int) -> list[int]:
    """The steps at which fine-tuning saves a checkpoint."""
    return list(range(save_steps, max_steps + 1, save_steps))


def checkpoint_folder(step: int) -> str:
    """The folder, inside fine-tuning's output, of the model saved at `step`."""
    return f"step-{step}"
