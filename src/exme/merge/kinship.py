"""Model kinship (Hu et al., "Exploring Model Kinship for Merging LLMs", arXiv 2410.12613): how similar
two fine-tuned models' deltas from their common base are.

For models A, B fine-tuned from a base, with deltas a = θ_A − θ_base and b = θ_B − θ_base over all
parameters flattened into one vector (embeddings, norms and lm_head included, as the authors' code
does), the metrics are
  pcc: Pearson correlation of a and b (the paper's main metric; higher = closer kin);
  cos: cosine similarity of a and b, *signed*. The authors' code computes sqrt(a·b² / (a·a b·b)),
       that is |cos|, which hides deltas pointing in opposite directions; take abs() to compare;
  ed:  Euclidean distance |a − b| (lower = closer kin).
With `split` (the authors' --split-calculation), each metric is computed per tensor and averaged,
weighted by the tensors' numbers of entries; tensors where it is NaN (a delta of zero variance or
zero norm) are left out.

Which tensors: those of the base and the models, which must all hold the same tensors with the same
shapes (as the merge planner checks them: a tensor absent from one model, different architectures
or shapes are errors, where the authors' code skips missing tensors and truncates rows to the base's
vocabulary). As in merges, a model storing no lm_head (tied to its input embedding) contributes its
input embedding in its place; a tied lm_head stored by none of them is counted once, as the
embedding, where the authors' state dicts count it twice.

How: one streaming pass over all the models at once, a block of rows at a time (as the merge
engine reads them, see blocks.py), keeping running sums in float64 on the compute device (CUDA if
available): n, Σa, Σb, Σa², Σb², Σab, plus Σ(a − b)², summed directly because deriving it from the
others loses all precision when two deltas are nearly equal. Memory stays at a few blocks of each
model, never a whole model. A model may also be a recipe file, whose tensors are computed as read.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from exme.device import resolve_device
from exme.errors import ExmeError
from exme.merge.blocks import Block, BlockReader, block_bytes, row_blocks, splittable
from exme.merge.plan import ModelOpener, TensorSource, aligned_tensors
from exme.merge.runtime import compute_threads, prefetched

METRICS = ("pcc", "cos", "ed")


@dataclass(frozen=True)
class Kinship:
    """The kinship of two models: correlation and signed cosine of their deltas (higher = closer kin),
    and the Euclidean distance between them (lower = closer kin)."""

    pcc: float
    cos: float
    ed: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class _Sums:
    """Running sums over the entries of N deltas d_i, in float64: the count, Σd_i, Σd_i·d_j (with
    Σd_i² on the diagonal) and Σ(d_i − d_j)² (upper triangle)."""

    def __init__(self, model_count: int, device: torch.device):
        self.count = 0
        self.sums = torch.zeros(model_count, dtype=torch.float64, device=device)
        self.products = torch.zeros(model_count, model_count, dtype=torch.float64, device=device)
        self.squared_distances = torch.zeros_like(self.products)

    def add_block(self, deltas: torch.Tensor) -> None:
        """Add a block of entries: `deltas` is (models, entries)."""
        self.count += deltas.shape[1]
        self.sums += deltas.sum(dim=1)
        self.products += deltas @ deltas.T
        for i, j in itertools.combinations(range(len(deltas)), 2):
            difference = deltas[i] - deltas[j]
            self.squared_distances[i, j] += difference @ difference

    def add(self, other: _Sums) -> None:
        self.count += other.count
        self.sums += other.sums
        self.products += other.products
        self.squared_distances += other.squared_distances

    def metrics(self) -> dict[str, torch.Tensor]:
        """Each metric as a (models, models) matrix, valid above the diagonal; NaN where undefined."""
        norms_squared = self.products.diagonal()
        scaled_covariance = self.products - torch.outer(self.sums, self.sums) / self.count
        scaled_variance = scaled_covariance.diagonal()
        return {
            "pcc": scaled_covariance / torch.sqrt(torch.outer(scaled_variance, scaled_variance)),
            "cos": self.products / torch.sqrt(torch.outer(norms_squared, norms_squared)),
            "ed": torch.sqrt(self.squared_distances),
        }


class _WeightedMeans:
    """The numel-weighted mean of per-tensor metrics, NaN values left out (--split-calculation)."""

    def __init__(self, model_count: int, device: torch.device):
        shape = (model_count, model_count)
        self.totals = {metric: torch.zeros(shape, dtype=torch.float64, device=device) for metric in METRICS}
        self.weights = {metric: torch.zeros(shape, dtype=torch.float64, device=device) for metric in METRICS}

    def add(self, metrics: dict[str, torch.Tensor], weight: int) -> None:
        for metric, values in metrics.items():
            defined = ~torch.isnan(values)
            self.totals[metric] += torch.where(defined, values * weight, 0)
            self.weights[metric] += defined * weight

    def metrics(self) -> dict[str, torch.Tensor]:
        return {metric: self.totals[metric] / self.weights[metric] for metric in METRICS}


@dataclass(frozen=True)
class _Request:
    """A block of rows of one tensor in the base (first) and in every model."""

    name: str
    sources: Sequence[TensorSource]
    rows: range | None

    @property
    def starts_tensor(self) -> bool:
        return self.rows is None or self.rows.start == 0

    @property
    def ends_tensor(self) -> bool:
        return self.rows is None or self.rows.stop == self.sources[0].shape[0]


def _deltas(request: _Request, block: Block, device: torch.device) -> torch.Tensor:
    """(models, entries): each model's block minus the base's, in float64."""
    base_source, *model_sources = request.sources
    base = block.take(base_source, device).to(device, torch.float64).reshape(-1)
    deltas = torch.empty(len(model_sources), base.numel(), dtype=torch.float64, device=device)
    for delta, source in zip(deltas, model_sources, strict=True):
        delta.copy_(block.take(source, device).reshape(-1)).sub_(base)
    return deltas


def _check_finite(sums: _Sums, tensor: str, models: Sequence[str], base: str) -> None:
    for model, norm_squared in zip(models, sums.products.diagonal().tolist(), strict=True):
        if not math.isfinite(norm_squared):
            raise ExmeError(f"tensor {tensor!r}: the delta of model {model} from {base} holds NaN or Inf")


def kinship_matrix(
    models: Sequence[str | Path],
    base: str | Path,
    *,
    split: bool = False,
    device: str | torch.device | None = None,
) -> dict[tuple[str, str], Kinship]:
    """The kinship of every pair of `models` (folders or recipe files) fine-tuned from `base`, keyed
    (models[i], models[j]) for i < j. One pass reads each model once, for all pairs together."""
    models, base = [str(model) for model in models], str(base)
    if len(models) < 2:
        raise ExmeError(f"kinship needs at least two models, got {len(models)}")
    resolved = [Path(path).resolve() for path in (base, *models)]
    for path, resolved_path in zip((base, *models), resolved, strict=True):
        if resolved.count(resolved_path) > 1:
            raise ExmeError(f"kinship compares distinct models and base; {path} is given twice")
    opener = ModelOpener()
    aligned = aligned_tensors([opener.open(path) for path in (base, *models)])
    device = resolve_device(device)
    total = _Sums(len(models), device)
    per_tensor = _WeightedMeans(len(models), device) if split else None
    requests = [
        _Request(name, sources, rows)
        for name, sources in aligned
        for rows in row_blocks(sources[0].shape, splittable(sources))
    ]
    with compute_threads(device), BlockReader() as reader:
        loaded = prefetched(
            requests, lambda r: reader.read(r.sources, r.rows), lambda r: block_bytes(r.sources, r.rows)
        )
        for request, block in loaded:
            if request.starts_tensor:
                tensor_sums = _Sums(len(models), device)
            tensor_sums.add_block(_deltas(request, block, device))
            del block
            if request.ends_tensor:
                _check_finite(tensor_sums, request.name, models, base)
                total.add(tensor_sums)
                if per_tensor:
                    per_tensor.add(tensor_sums.metrics(), tensor_sums.count)
    metrics = {name: values.cpu().tolist() for name, values in (per_tensor or total).metrics().items()}
    return {
        (models[i], models[j]): Kinship(**{name: values[i][j] for name, values in metrics.items()})
        for i, j in itertools.combinations(range(len(models)), 2)
    }


def kinship(
    model_a: str | Path,
    model_b: str | Path,
    base: str | Path,
    *,
    split: bool = False,
    device: str | torch.device | None = None,
) -> Kinship:
    """The kinship of two models (folders or recipe files) fine-tuned from `base`."""
    return kinship_matrix([model_a, model_b], base, split=split, device=device)[str(model_a), str(model_b)]
