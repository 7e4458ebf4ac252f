"""lm-eval's own HumanEval metric, offline, through a code_eval module where an online prefetch
leaves it: the generated code is run against the problem's tests (canonical solution passes, a
wrong one fails)."""

import gzip
import json
import os
import subprocess
import sys

from tests.code_eval_cache import place_code_eval
from tests.workflow.paper_cpu import humaneval_file

SCRIPT = """
import json, sys
from lm_eval.tasks.humaneval import utils
doc, completions = json.loads(sys.argv[1])
reference = doc["test"] + "\\ncheck(" + doc["entry_point"] + ")"
print(json.dumps([utils.pass_at_k([reference], [[doc["prompt"] + c]], k=[1])["pass@1"] for c in completions]))
"""


def test_humanevals_metric_runs_the_generated_code_against_the_problems_tests(tmp_path):
    place_code_eval(tmp_path / "hf_home")
    with gzip.open(humaneval_file(), "rt") as handle:
        doc = json.loads(handle.readline())  # HumanEval/0
    completions = [doc["canonical_solution"], "    return not True\n"]
    environment = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_ALLOW_CODE_EVAL": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([doc, completions])],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1.0, 0.0]
