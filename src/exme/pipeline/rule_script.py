"""The frame of every rule script: log to the rule's log file, turn bad input into one clear line."""

import sys
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, NoReturn

from exme.errors import ExmeError
from exme.process_exit import exit_without_teardown


def run_rule(main: Callable[[Any], None], snakemake: Any) -> NoReturn:
    """Run `main(snakemake)` with its output in the rule's log, then end the process (its outputs
    written and the log closed) without the interpreter's teardown, which would only add time to
    every job. An ExmeError exits 1 with its message in the log and on the console, where
    Snakemake's error report shows it; any other exception is logged with its traceback and
    re-raised."""
    with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
        try:
            main(snakemake)
        except ExmeError as error:
            message = f"error in rule {snakemake.rule}: {error}"
            print(message, file=log)
            print(message, file=sys.__stderr__)
            status = 1
        except Exception:
            traceback.print_exc(file=log)
            raise
        else:
            status = 0
    exit_without_teardown(status)
