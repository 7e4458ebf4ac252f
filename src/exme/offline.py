"""The environment that keeps Hugging Face libraries off the network: runs read only local files."""

import os

OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def use_offline_environment() -> None:
    """Set the offline flags unless the caller set them already (a user may allow downloads).

    Call it before importing lm_eval or datasets: they read these variables at import time."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def allow_downloads() -> None:
    """Clear the offline flags for this process, whatever the caller set: for the one job that fills
    the cache which later, offline, jobs read. Call it before importing any Hugging Face library."""
    os.environ.update(dict.fromkeys(OFFLINE_ENVIRONMENT, "0"))
