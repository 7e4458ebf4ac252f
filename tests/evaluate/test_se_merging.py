"""SE-Merging as an lm-eval model: per-sample coefficients, equality with the matching static
merges, batching by coefficients, bad input, and lm-eval runs of generation and multiple choice."""

import json

import pytest
import torch
import yaml

from exme.demo.base_model import build_tokenizer
from exme.demo.tasks import TASK_GENERATORS, lm_eval_task_name
from exme.errors import ExmeError
from exme.evaluate.se_merging import (
    MODEL_NAME,
    SEMergingLM,
    measure_inference_cost,
    se_coefficients,
    static_merge_lm,
)
from tests.tiny_models import load_folder, save_fine_tune, save_llama

PROMPTS = ["what is 2 plus 3?", "count the a in banana:", "look up key 7:"]
CHOICES = [" one", " five", " seven"]
GREEDY = {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}


def _instance(kind, arguments, index):
    from lm_eval.api.instance import Instance

    return Instance(kind, {}, arguments, index)


def loglikelihood_requests(prompts=PROMPTS):
    pairs = [(prompt, choice) for prompt in prompts for choice in CHOICES]
    return [_instance("loglikelihood", pair, i) for i, pair in enumerate(pairs)]


def generation_requests(prompts=PROMPTS):
    return [_instance("generate_until", (prompt, dict(GREEDY)), i) for i, prompt in enumerate(prompts)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A character tokenizer (43 ids) that fits the tiny Llamas' 64-entry vocabulary."""
    path = tmp_path_factory.mktemp("se_tokenizer")
    build_tokenizer(["abcdefghijklmnopqrstuvwxyz 0123456789?:"]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def make_lm(family, tokenizer_dir):
    def make(cls=SEMergingLM, coefficients=0.4, **options):
        options = {"device": "cpu", "batch_size": 4, "tokenizer": tokenizer_dir, **options}
        return cls(family.base, [family.ft_a, family.ft_b], coefficients, **options)

    return make


@pytest.fixture(scope="module")
def make_static(family, tokenizer_dir):
    def make(coefficients):
        experts = [family.ft_a, family.ft_b]
        return static_merge_lm(family.base, experts, coefficients, tokenizer=tokenizer_dir, device="cpu")

    return make


def forcing(rule):
    """An SEMergingLM whose coefficients are total · rule(prompt), forced through the test hook."""

    class Forced(SEMergingLM):
        def sample_coefficients(self, static, experts, contexts):
            rows = [rule(self.tok_decode(list(context))) for context in contexts]
            return self.total * torch.tensor(rows, dtype=torch.float64)

    return Forced


def assert_same_loglikelihoods(actual, expected):
    torch.testing.assert_close(
        torch.tensor([value for value, _ in actual]),
        torch.tensor([value for value, _ in expected]),
        rtol=0,
        atol=1e-5,
    )
    assert [greedy for _, greedy in actual] == [greedy for _, greedy in expected]


# --- the coefficients -------------------------------------------------------------------------------


def test_coefficients_are_a_softmax_of_similarities_rescaled_to_the_static_total():
    static = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    experts = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 2.0]]])  # [K=2, n=2, H=2]
    cosine = se_coefficients(static, experts, total=0.8, temperature=0.5)
    similarities = torch.tensor([[1.0, 2**-0.5], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(cosine, 0.8 * torch.softmax(similarities / 0.5, dim=-1))
    torch.testing.assert_close(cosine.sum(dim=-1), torch.full((2,), 0.8, dtype=torch.float64))
    l2 = se_coefficients(static, experts, total=1.0, temperature=1.0, similarity="l2")
    distances = torch.tensor([[0.0, 1.0], [2**0.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(l2, torch.softmax(-distances, dim=-1))
    # Equal similarities: uniform; a vanishing temperature: one-hot on the closest expert.
    uniform = se_coefficients(static, torch.stack([static, static]), total=0.8, temperature=1.0)
    torch.testing.assert_close(uniform, torch.full((2, 2), 0.4, dtype=torch.float64))
    one_hot = se_coefficients(static, experts, total=0.8, temperature=1e-6)
    torch.testing.assert_close(one_hot, torch.tensor([[0.8, 0.0], [0.0, 0.8]], dtype=torch.float64))


# --- equality with static merges ------------------------------------------------------------------


def test_one_hot_coefficients_equal_the_matching_expert_weighted_static_merge(make_lm, make_static):
    # Prompts with "plus" go to expert a, the others to expert b, within the same lm-eval calls.
    lm = make_lm(forcing(lambda prompt: [1.0, 0.0] if "plus" in prompt else [0.0, 1.0]))
    torch.testing.assert_close(
        lm.coefficients(PROMPTS), torch.tensor([[0.8, 0.0], [0.0, 0.8], [0.0, 0.8]], dtype=torch.float64)
    )
    requests, generations = loglikelihood_requests(), generation_requests()
    actual, generated = lm.loglikelihood(requests), lm.generate_until(generations)
    to_a, to_b = make_static([0.8, 0.0]), make_static([0.0, 0.8])
    expected = to_a.loglikelihood(requests[:3]) + to_b.loglikelihood(requests[3:])
    assert_same_loglikelihoods(actual, expected)
    assert generated == to_a.generate_until(generations[:1]) + to_b.generate_until(generations[1:])
    # The two groups really differ: expert a's merge scores the other prompts differently.
    assert not torch.allclose(
        torch.tensor([v for v, _ in to_a.loglikelihood(requests[3:])]),
        torch.tensor([v for v, _ in actual[3:]]),
        atol=1e-4,
    )


def test_a_vanishing_temperature_picks_the_closest_expert(make_lm, family, tokenizer_dir):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The static merge leans to expert a (λ = 0.9, 0.1), so a is the closest for every prompt.
    lm = make_lm(coefficients=[0.9, 0.1], temperature=1e-6)
    one_hot = torch.tensor([[1.0, 0.0]] * len(PROMPTS), dtype=torch.float64)
    torch.testing.assert_close(lm.coefficients(PROMPTS), one_hot, rtol=0, atol=1e-12)
    expert_a = HFLM(
        pretrained=AutoModelForCausalLM.from_pretrained(family.ft_a),
        tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir),
        batch_size=4,
        device="cpu",
    )
    requests = loglikelihood_requests()
    assert_same_loglikelihoods(lm.loglikelihood(requests), expert_a.loglikelihood(requests))
    assert lm.generate_until(generation_requests()) == expert_a.generate_until(generation_requests())


def test_uniform_coefficients_equal_the_static_merge(make_lm, make_static):
    lm = make_lm(forcing(lambda prompt: [0.5, 0.5]))
    static = make_static(0.4)
    requests, generations = loglikelihood_requests(), generation_requests()
    switches = lm.weight_switches
    assert_same_loglikelihoods(lm.loglikelihood(requests), static.loglikelihood(requests))
    # Expert a, expert b (representations), then the one group, whose W is the static one (no restore).
    assert lm.weight_switches - switches == 3
    assert lm.generate_until(generations) == static.generate_until(generations)


# --- batching and memory ----------------------------------------------------------------------------


def test_weights_switch_per_group_of_contexts_not_per_request(make_lm, monkeypatch):
    lm = make_lm()
    forwards = []
    original = SEMergingLM._model_call

    def spy(self, inputs, *args, **kwargs):
        forwards.append((tuple(self._current.tolist()), inputs.shape[0]))
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(SEMergingLM, "_model_call", spy)
    requests = loglikelihood_requests()  # 3 contexts x 3 continuations
    switches = lm.weight_switches
    lm.loglikelihood(requests)
    # K = 2 expert settings for the representations (the static one is current), 3 groups, 1 back.
    assert lm.weight_switches - switches == 2 + 3 + 1
    assert len(lm._coefficient_cache) == 3
    coefficients = set(lm._coefficient_cache.values())
    assert len(coefficients) == 3
    # Each context's three continuations run in one forward pass, under that context's coefficients.
    assert sorted(forwards) == sorted((c, 3) for c in coefficients)
    switches = lm.weight_switches
    lm.loglikelihood(requests)  # cached: no representation passes, one setting per group, one back
    assert lm.weight_switches - switches == 3 + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_switching_weights_does_not_drift_and_holds_weights_base_and_task_vectors(make_lm, family, dtype):
    lm = make_lm(coefficients=[0.3, 0.6], dtype=dtype)
    static = {name: parameter.detach().clone() for name, parameter in lm.model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        lm._set_coefficients(torch.rand(2, generator=generator, dtype=torch.float64) * 2 - 0.5)
    lm._set_coefficients(lm.static_coefficients)
    base, a, b = (load_folder(path) for path in (family.base, family.ft_a, family.ft_b))
    for name, parameter in lm.model.named_parameters():
        assert parameter.dtype == dtype
        assert torch.equal(parameter, static[name])  # recomputed, not updated in place: no drift
        # θ₀ and τₖ rounded to the dtype once, W computed from them in float32 and rounded once:
        # equal within one step of the dtype (a fused multiply-add rounds once where this rounds twice)
        held_base = base[name].to(dtype).float()
        vectors = [(tuned[name] - held_base).to(dtype).float() for tuned in (a, b)]
        expected = (held_base + 0.3 * vectors[0] + 0.6 * vectors[1]).to(dtype)
        torch.testing.assert_close(parameter.detach(), expected, rtol=torch.finfo(dtype).eps, atol=1e-6)
    entries = sum(t.numel() for t in base.values())
    assert lm.held_parameter_bytes == 4 * entries * dtype.itemsize  # W, θ₀, τ₁, τ₂


def test_bfloat16_equals_float32_within_bfloat16_rounding(make_lm):
    """SE-Merging held in bfloat16 gives float32's results within two bfloat16 steps (relative
    2⁻⁷): coefficients, log-likelihoods and greedy generations."""
    full, half = (
        make_lm(coefficients=[0.3, 0.6], temperature=0.05),
        make_lm(coefficients=[0.3, 0.6], temperature=0.05, dtype="bfloat16"),
    )
    torch.testing.assert_close(half.coefficients(PROMPTS), full.coefficients(PROMPTS), rtol=0, atol=2**-7)
    requests = loglikelihood_requests()
    torch.testing.assert_close(
        torch.tensor([value for value, _ in half.loglikelihood(requests)]),
        torch.tensor([value for value, _ in full.loglikelihood(requests)]),
        rtol=2**-7,
        atol=0,
    )
    assert half.generate_until(generation_requests()) == full.generate_until(generation_requests())


def test_tied_embeddings_are_switched_once_and_match_the_static_merge(make_family, tokenizer_dir):
    tied = make_family(tied=True)
    experts = [tied.ft_a, tied.ft_b]
    options = {"tokenizer": tokenizer_dir, "device": "cpu", "batch_size": 4}
    lm = forcing(lambda prompt: [0.5, 0.5])(tied.base, experts, 0.4, **options)
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight
    static = static_merge_lm(tied.base, experts, 0.4, **options)
    requests = loglikelihood_requests()
    assert_same_loglikelihoods(lm.loglikelihood(requests), static.loglikelihood(requests))
    base_bytes = sum(t.numel() * t.element_size() for t in load_folder(tied.base).values())
    assert lm.held_parameter_bytes == 4 * base_bytes  # the tied lm_head is neither stored nor held


def test_task_vectors_in_memory_give_the_same_coefficients(make_lm, family, tokenizer_dir):
    from_folders = make_lm()
    base = load_folder(family.base)
    vectors = [{n: t - base[n] for n, t in load_folder(path).items()} for path in (family.ft_a, family.ft_b)]
    in_memory = SEMergingLM(
        family.base, None, 0.4, task_vectors=vectors, tokenizer=tokenizer_dir, device="cpu", batch_size=4
    )
    torch.testing.assert_close(in_memory.coefficients(PROMPTS), from_folders.coefficients(PROMPTS))


def test_inference_cost_is_reported(make_lm):
    cost = measure_inference_cost(make_lm(), loglikelihood_requests(), generation_requests())
    assert cost["loglikelihood_s_per_item"] > 0 and cost["generate_until_s_per_item"] > 0
    assert cost["peak_memory_bytes"] > 0 and cost["peak_memory_kind"] == "process_max_rss"


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layer": 3}, r"layer must be an integer in \[-3, 2\].*got 3"),
        ({"layer": -4}, r"layer must be an integer in \[-3, 2\]"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"similarity": "dot"}, "similarity must be one of cosine, l2"),
        ({"coefficients": [0.3, 0.3, 0.3]}, "coefficients: 3 values for 2 experts"),
        ({"dtype": "int8"}, "dtype: 'int8' is not one of auto, float32, float16, bfloat16, float64"),
        ({"batch_size": "auto"}, "batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(make_lm, options, message):
    with pytest.raises(ExmeError, match=message):
        make_lm(**options)


def test_fewer_than_two_experts_is_an_error(family):
    with pytest.raises(ExmeError, match="experts: SE-Merging needs at least two experts, got 1"):
        SEMergingLM(family.base, [family.ft_a], device="cpu")
    with pytest.raises(ExmeError, match="task_vectors: SE-Merging needs at least two experts, got 0"):
        SEMergingLM(family.base, task_vectors=[], device="cpu")


def test_experts_of_another_hidden_size_are_an_error(family, tmp_path):
    narrow = save_llama(tmp_path / "narrow", 3, hidden_size=16)
    with pytest.raises(ExmeError, match=r"experts\[1\] .*narrow\): hidden size 16 differs from the base"):
        SEMergingLM(family.base, [family.ft_a, narrow], device="cpu")


def test_perplexity_requests_are_refused(make_lm):
    with pytest.raises(ExmeError, match="loglikelihood_rolling"):
        make_lm().loglikelihood_rolling([_instance("loglikelihood_rolling", ("hello",), 0)])


# --- inside lm-eval ----------------------------------------------------------------------------------


def test_registered_and_built_from_a_model_args_string(family, tokenizer_dir):
    from lm_eval.api.registry import get_model

    assert get_model(MODEL_NAME) is SEMergingLM
    lm = get_model(MODEL_NAME).create_from_arg_string(
        f"base={family.base},experts={family.ft_a}:{family.ft_b},coefficients=0.3:0.5,layer=1,"
        f"temperature=0.1,similarity=l2,tokenizer={tokenizer_dir}",
        {"batch_size": 2, "device": "cpu", "max_batch_size": None},
    )
    assert lm.static_coefficients.tolist() == [0.3, 0.5] and lm.layer == 1 and lm.batch_size == 2
    totals = lm.coefficients(PROMPTS).sum(dim=-1)
    torch.testing.assert_close(totals, torch.full((3,), 0.8, dtype=torch.float64))


@pytest.fixture(scope="module")
def multiple_choice_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mc_task")
    rows = [
        {"question": "2 plus 3 is", "choices": ["5", "7", "9"], "label": 0},
        {"question": "the first letter is", "choices": ["b", "a", "c"], "label": 1},
        {"question": "count of aa is", "choices": ["1", "3", "2"], "label": 2},
        {"question": "4 plus 4 is", "choices": ["8", "6", "2"], "label": 0},
    ]
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "task": "se_toy_mc",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(folder / "test.jsonl")}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    (folder / "se_toy_mc.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_simple_evaluate_runs_generation_and_multiple_choice_tasks(
    tiny_base, demo_data, multiple_choice_task, tmp_path
):
    import lm_eval
    from lm_eval.tasks import TaskManager

    experts = [save_fine_tune(tiny_base, tmp_path / f"ft{seed}", seed) for seed in (1, 2)]
    lm = SEMergingLM(tiny_base, experts, 0.5, layer=1, temperature=0.05, device="cpu", batch_size=4)
    generation_task = lm_eval_task_name(next(iter(TASK_GENERATORS)))
    task_manager = TaskManager(
        include_path=[str(demo_data / "lm_eval_tasks"), str(multiple_choice_task)], include_defaults=False
    )
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=[generation_task, "se_toy_mc"],
        task_manager=task_manager,
        limit=3,
        log_samples=False,
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    assert results["configs"][generation_task]["output_type"] == "generate_until"
    assert results["configs"]["se_toy_mc"]["output_type"] == "multiple_choice"
    assert 0.0 <= results["results"]["se_toy_mc"]["acc,none"] <= 1.0
    assert any(key.startswith("exact_match") for key in results["results"][generation_task])
    assert results["n-samples"]["se_toy_mc"]["effective"] == 3
    # 3 generation prompts and 3 multiple-choice contexts got their own coefficients.
    assert len(lm._coefficient_cache) == 6
    for coefficients in lm._coefficient_cache.values():
        assert sum(coefficients) == pytest.approx(1.0)
