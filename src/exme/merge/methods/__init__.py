"""Merge methods, one file each (a family's variants share one); importing this package registers them
all (see registry.py)."""

from exme.merge.methods import (  # noqa: F401
    arcee_fusion,
    breadcrumbs,
    dare,
    della,
    exme_merge,
    extrapolate,
    karcher,
    linear,
    model_stock,
    multislerp,
    nearswap,
    nuslerp,
    passthrough,
    ram,
    sce,
    slerp,
    task_arithmetic,
    ties,
)
