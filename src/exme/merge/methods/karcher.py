"""Karcher mean: the Riemannian (geodesic) mean of the models' directions on the unit hypersphere,
found by fixed-point iteration and scaled to their mean norm."""

from __future__ import annotations

from typing import Annotated

import torch

from exme.merge.methods.registry import MethodInputs, Positive, Range, merge_method


def _karcher_mean(tensors: list[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    weight = 1 / len(tensors)
    norms = [torch.linalg.vector_norm(tensor) for tensor in tensors]
    units = [tensor / norm if norm.item() != 0 else torch.zeros_like(tensor) for tensor, norm in
             zip(tensors, norms, strict=True)]  # fmt: skip
    valid = [unit for unit, norm in zip(units, norms, strict=True) if norm.item() > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    valid_weight = 1 / len(valid)
    mean = sum(valid_weight * unit for unit in valid)
    mean_norm = torch.linalg.vector_norm(mean)
    mean = valid[0].clone() if mean_norm.item() < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for unit in valid:
            cosine = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            angle = torch.arccos(cosine)
            if angle.item() < tol:
                continue
            tangent += valid_weight * (angle / torch.sin(angle)) * (unit - cosine * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm.item() < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm.item() > tol:
            mean = mean / unit_norm
    return sum(weight * norm for norm in norms) * mean


@merge_method(
    name="karcher",
    pretty_name="Karcher Mean",
    reference_url="https://arxiv.org/abs/2603.04972",
)
def karcher(
    inputs: MethodInputs, *, max_iter: Annotated[int, Range(0, None)] = 10, tol: Positive = 1e-5
) -> torch.Tensor:
    if len(inputs.tensors) == 1:
        return inputs.tensors[0]
    return _karcher_mean(list(inputs.tensors), max_iter, tol)
