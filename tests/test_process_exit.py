"""A finished command ends without the interpreter's teardown, its output flushed, its status kept."""

import os
import subprocess
import sys

# Buffered output (as when a pipe or file is the output): what os._exit alone would lose.
BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


def test_exit_flushes_output_keeps_the_status_and_skips_teardown():
    code = (
        "import atexit, sys\n"
        "from exme.process_exit import exit_without_teardown\n"
        "atexit.register(print, 'teardown ran')\n"
        "print('result', end='')\n"
        "sys.stderr.write('note')\n"
        "exit_without_teardown(3)\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=BUFFERED)
    assert process.returncode == 3
    assert process.stdout == "result"
    assert process.stderr == "note"
