"""SE-Merging (training-free, per-sample dynamic merging) as an lm-eval model class.

`SEMergingLM` is lm-eval's `HFLM` whose weights are chosen per input: registered as
`exme_se_merging` (`import exme.evaluate.se_merging` registers it), it takes a base model folder,
K ≥ 2 expert folders (or task vectors τₖ held in memory) and static coefficients λ (task arithmetic:
θ = θ₀ + Σₖ λₖ τₖ), and serves lm-eval's `loglikelihood` and `generate_until` requests (so
`multiple_choice` too) with the tasks' own splits and metrics.

The method, as this project reads it (the paper gives the idea, not these details):

1. An input's representation is the mean over the prompt's tokens of `hidden_states[layer]` as
   transformers returns it for the model body (no LM head): index 0 is the embedding output,
   index i < L the output of decoder layer i, index L (= -1, the default) the last layer's output
   after the final norm; negative indices count from the end. The prompt is the request's context
   as lm-eval tokenizes it, its last `max_length` tokens: for `loglikelihood` the context without
   the continuation, so the answer choices never steer the weights; for `generate_until` the
   prompt being continued.
2. The input's representation is computed under the static merge θ₀ + Σ λₖ τₖ and under each
   expert; "the expert's representation" is that of the pure expert θ₀ + τₖ.
3. Similarity: cosine similarity (default) or `l2`, the negative Euclidean distance (its scale
   follows the hidden states' norm, so the temperature must match it).
4. Per-sample coefficients λₖ(x) = (Σⱼ λⱼ) · softmax(similarity / temperature)ₖ: they sum to
   the static merge's total, and are uniform (Σλ/K each) when the similarities are equal; so with
   unequal static λ, uniform per-sample coefficients are not the static merge.
5. The input is then scored or continued by θ₀ + Σₖ λₖ(x) τₖ.

`SEMergingLM.sample_coefficients` is the one step from representations to coefficients; a subclass
may override it (the tests force one-hot and uniform coefficients through it).

Efficiency and memory. The model holds one working parameter set W = θ₀ + Σ λₖ τₖ, the base θ₀
and the K task vectors, all in `dtype` (the evaluation dtype: 16-bit for large models), on the
evaluation device: (2 + K) · N · bytes(dtype) for N parameters, plus float32 temporaries of
`_SWITCH_CHUNK` entries while weights are set; expert weights are read one tensor at a
time. At N = 8·10⁹ in bfloat16 that is 64 GB for K = 2 (80 GB for K = 3); held in float32 it would
be twice that. Moving to other coefficients recomputes W = θ₀ + Σₖ λ'ₖ τₖ from the held tensors, a
chunk at a time in float32 (float64 for a float64 `dtype`), rounded once to `dtype`: about the
arithmetic of a forward pass over K + 1 tokens. For each call from
lm-eval (all requests of one type, over all tasks), the representations of the distinct contexts
not seen before are computed in batches of `batch_size` under the static weights and then each
expert's (K weight settings; the static one is current between calls); only each context's K
coefficients are kept, in a cache keyed by a 16-byte digest of its tokens, for the model's lifetime
(later calls and tasks reuse them). The requests are then grouped by their coefficient vector (a
context's continuations share it; contexts with identical coefficients, e.g. one-hot ones at a
vanishing temperature, share a group) and each group runs through HFLM's own batching and
reordering with W set once; W is then set back to the static merge. Weight settings per call:
at most K + groups + 1 ≤ K + distinct contexts + 1, never one per request, and no forward pass
mixes requests of different groups. Generation therefore batches only requests with the same
coefficients, usually those of one context.

Precision. W is recomputed from θ₀ and the τₖ at every setting, never updated in place, so it does
not drift: every setting of the same coefficients gives the same W, in any `dtype`. τₖ = θₖ − θ₀ is
formed in float32 and rounded to `dtype` once; in bfloat16 it is usually exact (fine-tuning moves
a weight by a few bfloat16 steps, and the difference of two floats within a factor of 2 of each
other is exact).

Not supported: `loglikelihood_rolling` (perplexity tasks have no prompt to choose weights by), and
`batch_size="auto"`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import resource
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from exme.device import resolve_device
from exme.dtypes import AUTO, MERGE_DTYPES, torch_dtype
from exme.errors import ExmeError
from exme.evaluate.models import load_recipe_model
from exme.files import CONFIG_FILE
from exme.merge.io.model_folder import ModelFolder
from exme.merge.io.reader import TensorReader
from exme.merge.multi import load_recipe
from exme.merge.recipe import recipe_from_dict
from exme.offline import use_offline_environment

use_offline_environment()  # before lm_eval's import: it reads the HF_* environment at import time

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

log = logging.getLogger(__name__)

MODEL_NAME = "exme_se_merging"
SIMILARITIES = ("cosine", "l2")
# Those a merge computes in, or "auto": the base folder's own dtype, as `lm_eval --model hf` loads it
# (the pipeline's evaluation.dtype).
DTYPES = (AUTO, *MERGE_DTYPES)
# Entries of W recomputed at once when the coefficients change: bounds the float32 temporaries.
_SWITCH_CHUNK = 2**22
LIST_SEPARATOR = ":"  # lists in an lm-eval model_args string: experts=/a:/b,coefficients=0.5:0.5


def se_coefficients(
    static: torch.Tensor,
    experts: torch.Tensor,
    *,
    total: float,
    temperature: float,
    similarity: str = "cosine",
) -> torch.Tensor:
    """Per-sample coefficients [n, K] from the static merge's representations [n, H] and the
    experts' [K, n, H]: total · softmax(similarity / temperature) over the experts, in float64."""
    static, experts = static.double(), experts.double()
    if similarity == "cosine":
        scores = torch.nn.functional.cosine_similarity(static.unsqueeze(0), experts, dim=-1)
    elif similarity == "l2":
        scores = -torch.linalg.vector_norm(static.unsqueeze(0) - experts, dim=-1)
    else:
        raise ExmeError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    return total * torch.softmax(scores.T / temperature, dim=-1)


def _as_list(value: Any, name: str) -> list:
    if isinstance(value, str):
        return [item for item in value.split(LIST_SEPARATOR) if item]
    if isinstance(value, os.PathLike | int | float):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    raise ExmeError(f"{name} must be a list or a {LIST_SEPARATOR!r}-separated string, got {value!r}")


def _float(value: Any, name: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ExmeError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(result):
        raise ExmeError(f"{name} must be a finite number, got {value!r}")
    return result


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExmeError(f"{name} must be a positive integer, got {value!r}")
    return value


@register_model(MODEL_NAME)
class SEMergingLM(HFLM):
    """lm-eval's HFLM over θ₀ + Σₖ λₖ(x) τₖ with per-sample coefficients (see the module docstring).

    Arguments: `base` (a Hugging Face model folder, also the tokenizer unless `tokenizer` names
    one), `experts` (K ≥ 2 folders of fine-tunes of the base) or `task_vectors` (K mappings
    {parameter name: θₖ − θ₀}), `coefficients` (the static λ: one number for all experts, or one per
    expert), `layer`, `temperature` (> 0), `similarity` ('cosine' or 'l2'), `dtype` (one of
    DTYPES, default float32), `device`, `batch_size`; other keyword arguments go to HFLM (e.g. `max_length`).
    Lists may be given as ':'-separated strings (lm-eval's model_args string form).
    """

    def __init__(
        self,
        base: str | os.PathLike,
        experts: Sequence[str | os.PathLike] | str | None = None,
        coefficients: float | Sequence[float] | str = 1.0,
        *,
        task_vectors: Sequence[Mapping[str, torch.Tensor]] | None = None,
        layer: int = -1,
        temperature: float = 1.0,
        similarity: str = "cosine",
        tokenizer: str | os.PathLike | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device | None = None,
        batch_size: int | str = 1,
        **hflm_kwargs: Any,
    ) -> None:
        if (experts is None) == (task_vectors is None):
            raise ExmeError("experts: give either expert model folders or task_vectors, not both or neither")
        expert_list = _as_list(experts, "experts") if experts is not None else list(task_vectors or [])
        argument = "experts" if experts is not None else "task_vectors"
        if len(expert_list) < 2:
            raise ExmeError(f"{argument}: SE-Merging needs at least two experts, got {len(expert_list)}")
        n_experts = len(expert_list)
        static = [_float(value, "coefficients") for value in _as_list(coefficients, "coefficients")]
        if len(static) == 1:
            static *= n_experts
        if len(static) != n_experts:
            raise ExmeError(f"coefficients: {len(static)} values for {n_experts} experts")
        self.temperature = _float(temperature, "temperature")
        if self.temperature <= 0:
            raise ExmeError(f"temperature must be > 0, got {temperature!r}")
        if similarity not in SIMILARITIES:
            raise ExmeError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
        self.similarity = similarity
        batch_size = _positive_int(batch_size, "batch_size")
        weights_dtype = torch_dtype(dtype, "dtype", DTYPES)
        device = resolve_device(device)

        base = Path(base)
        if not (base / CONFIG_FILE).is_file():
            raise ExmeError(f"base: model folder {base} has no {CONFIG_FILE}")
        model = AutoModelForCausalLM.from_pretrained(base, dtype=weights_dtype).to(device).eval()
        weights_dtype = model.dtype
        self.layer = _checked_layer(layer, model)
        # Tied parameters (e.g. lm_head = embeddings) are listed once and updated once.
        self._parameters = list(model.named_parameters())
        self._base = [parameter.detach().clone() for _, parameter in self._parameters]
        if experts is not None:
            self._task_vectors = [
                _task_vector_from_folder(Path(path), index, model, self._parameters)
                for index, path in enumerate(expert_list)
            ]
        else:
            self._task_vectors = [
                _task_vector_from_mapping(vector, index, self._parameters, weights_dtype, device)
                for index, vector in enumerate(expert_list)
            ]
        self.n_experts = n_experts
        self.static_coefficients = torch.tensor(static, dtype=torch.float64)
        self._current = torch.zeros(n_experts, dtype=torch.float64)  # W = θ₀ as loaded
        # Context → coefficients, keyed by a 16-byte digest of the context's tokens (not the tokens).
        self._coefficient_cache: dict[bytes, tuple[float, ...]] = {}
        self.weight_switches = 0
        self._set_coefficients(self.static_coefficients)
        super().__init__(
            pretrained=model,
            tokenizer=AutoTokenizer.from_pretrained(tokenizer or base),
            batch_size=batch_size,
            device=str(device),
            **hflm_kwargs,
        )

    # --- weights -------------------------------------------------------------------------------

    @property
    def total(self) -> float:
        """Σλ of the static merge, which the per-sample coefficients keep."""
        return float(self.static_coefficients.sum())

    @property
    def held_parameter_bytes(self) -> int:
        """Bytes of the working parameters W, the base and the task vectors."""
        tensors = [p for _, p in self._parameters] + self._base
        tensors += [t for vector in self._task_vectors for t in vector]
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def _set_coefficients(self, coefficients: torch.Tensor) -> None:
        """W = θ₀ + Σₖ λ'ₖ τₖ, computed a chunk at a time in float32 (float64 for float64 weights)."""
        if torch.equal(coefficients.double(), self._current):
            return
        exact = torch.float64 if self._base[0].dtype == torch.float64 else torch.float32
        values = coefficients.tolist()
        terms = [(vector, value) for vector, value in zip(self._task_vectors, values, strict=True) if value]
        for index, (_, parameter) in enumerate(self._parameters):
            pieces = [tensor.view(-1).split(_SWITCH_CHUNK) for tensor in (parameter, self._base[index])]
            vectors = [(vector[index].view(-1).split(_SWITCH_CHUNK), value) for vector, value in terms]
            for position, (target, base) in enumerate(zip(*pieces, strict=True)):
                total = base.to(exact, copy=True)
                for chunks, value in vectors:
                    total.add_(chunks[position], alpha=value)
                target.copy_(total)
        self._current = coefficients.double().clone()
        self.weight_switches += 1

    def _expert_setting(self, index: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(index), self.n_experts).double()

    # --- representations and coefficients ------------------------------------------------------

    @torch.no_grad()
    def _representations(self, contexts: list[tuple[int, ...]]) -> torch.Tensor:
        """Mean over each context's tokens of hidden_states[layer] under the current weights: [n, H]."""
        body = self.model.base_model
        pooled: list[torch.Tensor | None] = [None] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(contexts[i]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):  # right padding: causal attention keeps real tokens exact
                ids[row, : len(contexts[i])] = torch.tensor(contexts[i])
                mask[row, : len(contexts[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            output = body(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            hidden = output.hidden_states[self.layer].double()
            weights = mask.unsqueeze(-1).double()
            means = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
            for row, i in enumerate(batch):
                pooled[i] = means[row].cpu()
        return torch.stack(pooled)  # type: ignore[arg-type]

    def sample_coefficients(
        self, static: torch.Tensor, experts: torch.Tensor, contexts: list[tuple[int, ...]]
    ) -> torch.Tensor:
        """Coefficients [n, K] for `contexts` (token ids) from their representations under the static
        merge [n, H] and the experts [K, n, H]. The one place that maps representations to
        coefficients: a subclass may override it (the tests force chosen coefficients this way)."""
        return se_coefficients(
            static, experts, total=self.total, temperature=self.temperature, similarity=self.similarity
        )

    def _coefficients_for(self, contexts: list[tuple[int, ...]]) -> list[tuple[float, ...]]:
        """Each context's coefficients, computing (K + 1 weight settings) those not cached yet."""
        keys = [_digest(context) for context in contexts]
        missing = list({key: context for key, context in zip(keys, contexts, strict=True)}.items())
        missing = [(key, context) for key, context in missing if key not in self._coefficient_cache]
        if missing:
            tokens = [context for _, context in missing]
            self._set_coefficients(self.static_coefficients)
            static = self._representations(tokens)
            expert_reps = []
            for index in range(self.n_experts):
                self._set_coefficients(self._expert_setting(index))
                expert_reps.append(self._representations(tokens))
            coefficients = self.sample_coefficients(static, torch.stack(expert_reps), tokens)
            coefficients = coefficients.double().cpu()
            if coefficients.shape != (len(missing), self.n_experts) or not coefficients.isfinite().all():
                raise ExmeError(
                    f"SE-Merging: per-sample coefficients must be finite, of shape "
                    f"{(len(missing), self.n_experts)}; got shape {tuple(coefficients.shape)} "
                    "(NaN or Inf weights or hidden states?)"
                )
            for (key, _), row in zip(missing, coefficients.tolist(), strict=True):
                self._coefficient_cache[key] = tuple(row)
        return [self._coefficient_cache[key] for key in keys]

    def coefficients(self, contexts: Sequence[str]) -> torch.Tensor:
        """The per-sample coefficients [n, K] (float64) this model uses for prompts given as strings."""
        tokens = [self._context_tokens(self.tok_encode(context)) for context in contexts]
        return torch.tensor(self._coefficients_for(tokens), dtype=torch.float64)

    def _context_tokens(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """The prompt tokens a representation is computed over: the last max_length."""
        return tuple(tokens[-self.max_length :])

    def _run_grouped(
        self, contexts: list[tuple[int, ...]], run: Callable[[list[int]], list], disable_tqdm: bool
    ) -> list:
        """run(indices) for each group of requests sharing coefficients, W set once per group."""
        groups: dict[tuple[float, ...], list[int]] = {}
        for index, coefficients in enumerate(self._coefficients_for(contexts)):
            groups.setdefault(coefficients, []).append(index)
        log.info("SE-Merging: %d requests in %d coefficient groups", len(contexts), len(groups))
        results: list = [None] * len(contexts)
        progress = tqdm(
            total=len(contexts), disable=disable_tqdm or self.rank != 0, desc="SE-Merging requests"
        )
        try:
            for coefficients, indices in groups.items():
                self._set_coefficients(torch.tensor(coefficients, dtype=torch.float64))
                for index, result in zip(indices, run(indices), strict=True):
                    results[index] = result
                progress.update(len(indices))
        finally:
            progress.close()
            self._set_coefficients(self.static_coefficients)
        return results

    # --- lm-eval entry points --------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if not requests:
            return []
        if any(request[0] is None for request in requests):
            raise ExmeError(f"{MODEL_NAME}: loglikelihood_rolling requests are not supported")
        contexts = [self._context_tokens(context_tokens) for _, context_tokens, _ in requests]
        parent = super()._loglikelihood_tokens

        def run(indices: list[int]) -> list:
            return parent([requests[i] for i in indices], disable_tqdm=True, override_bs=override_bs)

        return self._run_grouped(contexts, run, disable_tqdm)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        contexts = [self._context_tokens(self.tok_encode(request.args[0])) for request in requests]
        parent = super().generate_until

        def run(indices: list[int]) -> list[str]:
            return parent([requests[i] for i in indices], disable_tqdm=True)

        return self._run_grouped(contexts, run, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise ExmeError(
            f"{MODEL_NAME}: loglikelihood_rolling (perplexity) tasks are not supported: they have no "
            "prompt to choose the per-sample coefficients by"
        )


def _digest(tokens: Sequence[int]) -> bytes:
    return hashlib.blake2b(array("q", tokens).tobytes(), digest_size=16).digest()


def _checked_layer(layer: Any, model: torch.nn.Module) -> int:
    n_layers = model.config.get_text_config().num_hidden_layers
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -(n_layers + 1) <= layer <= n_layers:
        raise ExmeError(
            f"layer must be an integer in [{-(n_layers + 1)}, {n_layers}] (hidden_states of a model "
            f"with {n_layers} layers: 0 = embeddings, {n_layers} = last), got {layer!r}"
        )
    return layer


def _task_vector_from_folder(
    path: Path, index: int, model: torch.nn.Module, parameters: list[tuple[str, torch.nn.Parameter]]
) -> list[torch.Tensor]:
    """θₖ − θ₀ for each parameter, read one tensor at a time from the expert's safetensors."""
    where = f"experts[{index}] ({path})"
    try:
        folder = ModelFolder(path)
        config, stored = folder.config, folder.tensors
    except ExmeError as error:
        raise ExmeError(f"{where}: {error}") from None
    base_hidden = model.config.get_text_config().hidden_size
    expert_hidden = config.get("hidden_size", config.get("text_config", {}).get("hidden_size"))
    if expert_hidden is not None and expert_hidden != base_hidden:
        raise ExmeError(f"{where}: hidden size {expert_hidden} differs from the base model's {base_hidden}")
    names = {name for name, _ in parameters}
    aliases = set(model.state_dict()) - names  # tied parameters' second names, buffers
    if untied := sorted(name for name in stored if name in aliases):
        raise ExmeError(f"{where}: holds {untied[0]}, which the base model ties to another parameter")
    reader = TensorReader()
    vector = []
    try:
        for name, parameter in parameters:
            location = stored.get(name)
            if location is None:
                raise ExmeError(f"{where}: has no tensor {name}")
            if location.shape != tuple(parameter.shape):
                raise ExmeError(
                    f"{where}: tensor {name} has shape {list(location.shape)}, "
                    f"the base model's {list(parameter.shape)}"
                )
            # θₖ − θ₀ in float32 (at least), rounded once to the parameters' dtype
            exact = torch.promote_types(parameter.dtype, torch.float32)
            tensor = reader.read(location).to(device=parameter.device, dtype=exact)
            vector.append(tensor.sub_(parameter.detach()).to(parameter.dtype))
    finally:
        reader.close()
    return vector


def _task_vector_from_mapping(
    vector: Mapping[str, torch.Tensor],
    index: int,
    parameters: list[tuple[str, torch.nn.Parameter]],
    dtype: torch.dtype,
    device: torch.device,
) -> list[torch.Tensor]:
    result = []
    for name, parameter in parameters:
        if name not in vector:
            raise ExmeError(f"task_vectors[{index}]: has no tensor {name}")
        tensor = vector[name]
        if tuple(tensor.shape) != tuple(parameter.shape):
            raise ExmeError(
                f"task_vectors[{index}]: tensor {name} has shape {list(tensor.shape)}, "
                f"the base model's {list(parameter.shape)}"
            )
        result.append(tensor.detach().to(device=device, dtype=dtype))
    return result


def static_merge_lm(
    base: str | os.PathLike,
    experts: Sequence[str | os.PathLike],
    coefficients: float | Sequence[float],
    *,
    tokenizer: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    dtype: str = "float32",
    **hflm_kwargs: Any,
) -> HFLM:
    """An HFLM over the static task-arithmetic merge θ₀ + Σₖ λₖ τₖ, built in float32 by the merge
    engine and cast to `dtype` (the reference SE-Merging is compared with)."""
    experts = [str(path) for path in experts]
    static = _as_list(coefficients, "coefficients")
    if len(static) == 1:
        static *= len(experts)
    if len(static) != len(experts):
        raise ExmeError(f"coefficients: {len(static)} values for {len(experts)} experts")
    recipe = recipe_from_dict(
        {
            "merge_method": "task_arithmetic",
            "base_model": str(base),
            "models": [
                {"model": path, "parameters": {"weight": _float(value, "coefficients")}}
                for path, value in zip(experts, static, strict=True)
            ],
            "dtype": "float32",
            "out_dtype": "float32",
            "tokenizer_source": str(tokenizer or base),
        }
    )
    device = resolve_device(device)
    model, tokenizer_object = load_recipe_model(recipe, device, "static merge", dtype)
    return HFLM(
        pretrained=model, tokenizer=tokenizer_object, batch_size=batch_size, device=str(device), **hflm_kwargs
    )


def held_parameter_bytes(lm: HFLM) -> int:
    """Bytes of parameters an lm holds: W and the task vectors for SEMergingLM, else the model's."""
    if isinstance(lm, SEMergingLM):
        return lm.held_parameter_bytes
    return sum(p.numel() * p.element_size() for p in lm.model.parameters())


def measure_inference_cost(
    lm: HFLM, loglikelihood_requests: list[Instance], generation_requests: list[Instance]
) -> dict[str, Any]:
    """Time per item of lm.loglikelihood and lm.generate_until on the given requests, and peak
    memory: CUDA's peak allocation when the model is on a GPU, else the process's peak RSS (which
    includes everything loaded before: measure each model in a fresh process)."""
    on_cuda = lm.device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timings = {}
    for kind, requests, call in (
        ("loglikelihood", loglikelihood_requests, lm.loglikelihood),
        ("generate_until", generation_requests, lm.generate_until),
    ):
        start = time.perf_counter()
        if requests:
            call(requests, disable_tqdm=True)
        if on_cuda:
            torch.cuda.synchronize()
        timings[f"{kind}_s_per_item"] = (time.perf_counter() - start) / max(1, len(requests))
    if on_cuda:
        peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"
    return {
        **timings,
        "peak_memory_bytes": peak,
        "peak_memory_kind": kind,
        "held_parameter_bytes": held_parameter_bytes(lm),
    }


def se_merging_lm(
    recipe_path: str | os.PathLike,
    *,
    layer: int,
    temperature: float,
    similarity: str,
    batch_size: int,
    dtype: str = "float32",
    device: str | torch.device | None = None,
) -> SEMergingLM:
    """SE-Merging over the static task-arithmetic merge a recipe describes (its base model, its
    models as the experts and their weights as the static coefficients), held in `dtype`."""
    recipe = load_recipe(recipe_path)
    if recipe.merge_method != "task_arithmetic" or recipe.base_model is None:
        raise ExmeError(f"recipe {recipe_path}: SE-Merging needs a task_arithmetic recipe with a base_model")
    weights = [entry.parameters.get("weight", 1.0) for entry in recipe.models]
    return SEMergingLM(
        recipe.base_model,
        [entry.model for entry in recipe.models],
        weights,
        layer=layer,
        temperature=temperature,
        similarity=similarity,
        tokenizer=recipe.tokenizer_source,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
    )
