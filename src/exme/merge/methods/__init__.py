"""Merge methods; importing this package registers them all (see registry.py)."""

from exme.merge.methods import (  # noqa: F401
    exme_merge,
    extrapolate,
    generalized_task_arithmetic,
    linear,
    slerp,
)
