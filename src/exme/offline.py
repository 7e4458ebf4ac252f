"""The environment that keeps Hugging Face libraries off the network: runs read only local files."""

import os
import sys

# HF_EVALUATE_OFFLINE: HF evaluate's metric modules (lm-eval's code tasks load `code_eval`) would
# otherwise try the Hub first, which on a node without network can hang until a time-out.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
}


def use_offline_environment() -> None:
    """Set the offline flags unless the caller set them already (a user may allow downloads).

    Call it before importing lm_eval or datasets: they read these variables at import time."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def set_offline(offline: bool) -> None:
    """Forbid (offline) or allow downloads from the Hugging Face Hub for the rest of this process.

    huggingface_hub and datasets read the environment once, when imported; where they are imported
    already, their flags are set too, so this holds whatever was imported before."""
    value = "1" if offline else "0"
    for key in OFFLINE_ENVIRONMENT:
        os.environ[key] = value
    if (hub_constants := sys.modules.get("huggingface_hub.constants")) is not None:
        hub_constants.HF_HUB_OFFLINE = offline
    if (datasets_config := sys.modules.get("datasets.config")) is not None:
        datasets_config.HF_HUB_OFFLINE = offline
        datasets_config.HF_DATASETS_OFFLINE = offline
    if (evaluate_config := sys.modules.get("evaluate.config")) is not None:
        evaluate_config.HF_EVALUATE_OFFLINE = offline
