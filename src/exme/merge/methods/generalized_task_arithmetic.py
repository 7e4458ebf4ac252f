"""Task arithmetic, TIES and DARE: one generalized task-vector merge, registered under four names.

θ = θ_base + λ · Σ_i w_i m_i sparsify(θ_i − θ_base) [/ Σ_i w_i m_i if normalize], where the sign
mask m_i (TIES) keeps entries agreeing with the sign of the weighted sum of task vectors.
"""

import torch

from exme.merge.methods.registry import (
    BasePolicy,
    MergeMethod,
    MethodInputs,
    Parameter,
    global_parameter,
    per_model_parameter,
    register,
)
from exme.merge.methods.sparsify import Sparsification, sparsify

# mergekit treats weights summing to less than this as 0 and then does not divide.
_ZERO_WEIGHT_SUM = 1e-8


def _sign_consensus_sum(deltas: torch.Tensor, weight: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES: sum the weighted deltas agreeing in sign with their total, and their weights."""
    weights = torch.tensor(weight, dtype=deltas.dtype, device=deltas.device)
    weights = weights.reshape(-1, *([1] * (deltas.dim() - 1)))
    deltas.mul_(weights)
    majority_positive = deltas.sum(dim=0) >= 0
    agrees = torch.where(majority_positive, deltas > 0, deltas < 0)
    merged_delta = (deltas * agrees).sum(dim=0)
    divisor = (weights * agrees).sum(dim=0)
    divisor[divisor == 0] = 1
    return merged_delta, divisor


def _merge_function(sparsification: Sparsification | None, sign_consensus: bool):
    def merge(
        inputs: MethodInputs,
        *,
        weight: list[float],
        density: list[float],
        normalize: bool,
        rescale: bool,
        int8_mask: bool,  # only shrinks mergekit's mask storage; results are identical
        **keyword_named: float,  # "lambda" is a Python keyword, so it cannot be named above
    ) -> torch.Tensor:
        scale = keyword_named["lambda"]
        base = inputs.base
        deltas = (
            sparsify(
                tensor.sub_(base),
                density=density[index],
                method=sparsification,
                rescale=rescale,
                generator=inputs.generator_for(index),
            )
            if sparsification
            else tensor.sub_(base)
            for index, tensor in enumerate(inputs.tensors)
        )
        if sign_consensus:
            merged_delta, divisor = _sign_consensus_sum(torch.stack(list(deltas)), weight)
        else:
            merged_delta = None
            for delta, model_weight in zip(deltas, weight, strict=True):
                if merged_delta is None:
                    merged_delta = delta.mul_(model_weight)
                else:
                    merged_delta.add_(delta, alpha=model_weight)
            divisor = sum(weight)
            if abs(divisor) < _ZERO_WEIGHT_SUM:
                divisor = 1.0
        if normalize:
            merged_delta /= divisor
        if scale != 1:
            merged_delta *= scale
        return merged_delta.add_(base)

    return merge


def _parameters(default_normalize: bool, default_rescale: bool) -> tuple[Parameter, ...]:
    return (
        per_model_parameter("weight", float),
        per_model_parameter("density", float, 1.0),
        global_parameter("normalize", bool, default_normalize),
        global_parameter("rescale", bool, default_rescale),
        global_parameter("lambda", float, 1.0),
        global_parameter("int8_mask", bool, False),
    )


for _name, _pretty_name, _url, _sparsification, _consensus, _normalize, _rescale in (
    ("task_arithmetic", "Task Arithmetic", "https://arxiv.org/abs/2212.04089", None, False,
     False, False),
    ("ties", "TIES", "https://arxiv.org/abs/2306.01708", Sparsification.MAGNITUDE, True,
     True, False),
    ("dare_linear", "Linear DARE", "https://arxiv.org/abs/2311.03099", Sparsification.RANDOM,
     False, False, True),
    ("dare_ties", "DARE TIES", "https://arxiv.org/abs/2311.03099", Sparsification.RANDOM, True,
     False, True),
):  # fmt: skip
    register(
        MergeMethod(
            name=_name,
            pretty_name=_pretty_name,
            reference_url=_url,
            base=BasePolicy.REQUIRED,
            parameters=_parameters(_normalize, _rescale),
            function=_merge_function(_sparsification, _consensus),
            # Sparsification looks at whole tensors (top-k, norms, per-tensor random masks).
            elementwise=lambda parameters: all(d >= 1 for d in parameters["density"]),
        )
    )
