"""Spherical linear interpolation between the base (t=0) and one other model (t=1)."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, merge_method
from exme.merge.methods.sparsify import chunks

# Above this |cos| the two tensors are (anti)parallel and slerp is ill-conditioned: interpolate.
_COLINEAR_THRESHOLD = 0.9995
_EPS = 1e-8


@merge_method(
    name="slerp",
    pretty_name="SLERP",
    reference_url="https://en.wikipedia.org/wiki/Slerp",
    base=BasePolicy.REQUIRED,
    min_models=1,
    max_models=1,
)
def slerp(inputs: MethodInputs, *, t: Fraction) -> torch.Tensor:
    start, end = inputs.base, inputs.tensors[0]
    start_norm, end_norm = torch.linalg.vector_norm(start), torch.linalg.vector_norm(end)
    start_norm = torch.where(start_norm > _EPS, start_norm, 1)
    end_norm = torch.where(end_norm > _EPS, end_norm, 1)
    # Normalized before multiplying (a raw dot product may overflow), a chunk at a time.
    cosine = sum(float(((a / start_norm) * (b / end_norm)).sum()) for a, b in
                 zip(chunks(start), chunks(end), strict=True))  # fmt: skip
    cosine = min(1.0, max(-1.0, cosine))
    if abs(cosine) > _COLINEAR_THRESHOLD:
        start_coefficient, end_coefficient = 1 - t, t
    else:
        angle = torch.acos(torch.tensor(cosine, dtype=torch.float64))
        start_coefficient = float(torch.sin((1 - t) * angle) / torch.sin(angle))
        end_coefficient = float(torch.sin(t * angle) / torch.sin(angle))
    return end.mul_(end_coefficient).add_(start, alpha=start_coefficient)
