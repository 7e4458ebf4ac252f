"""Every rule script's frame: its output in the rule's log, bad input as one line, a clean exit."""

import subprocess
import sys

from tests.test_process_exit import BUFFERED

SCRIPT = """\
import sys, types
from exme.errors import ExmeError
from exme.pipeline.rule_script import run_rule

def main(snakemake):
    print("working")
    outcome = sys.argv[2]
    if outcome == "bad input":
        raise ExmeError("config key 'alpha' must be a number")
    if outcome == "bug":
        raise ValueError("boom")

run_rule(main, types.SimpleNamespace(log=[sys.argv[1]], rule="extrapolate"))
"""


def _run(tmp_path, outcome):
    log = tmp_path / "rule.log"
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), outcome], capture_output=True, text=True, env=BUFFERED
    )
    return process, log.read_text()


def test_a_finished_rule_exits_0_with_its_output_in_the_log(tmp_path):
    process, log = _run(tmp_path, "done")
    assert process.returncode == 0
    assert log == "working\n"
    assert process.stdout == process.stderr == ""


def test_bad_input_exits_1_with_one_line_in_the_log_and_on_the_console(tmp_path):
    process, log = _run(tmp_path, "bad input")
    message = "error in rule extrapolate: config key 'alpha' must be a number\n"
    assert process.returncode == 1
    assert log == "working\n" + message
    assert process.stderr == message


def test_another_exception_is_logged_with_its_traceback_and_raised(tmp_path):
    process, log = _run(tmp_path, "bug")
    assert process.returncode == 1
    assert log.startswith("working\nTraceback") and log.endswith("ValueError: boom\n")
    assert process.stderr.endswith("ValueError: boom\n")
