"""Running parts of a merge in forked processes.

Merge workers in threads of one process do not scale on the CPU: every torch call takes the
interpreter lock back when it returns, and a chunk-sized operation lasts about as long as a
hand-over of the lock, so two threads merge little faster than one (see benchmarks/RESULTS.md).
Processes share no lock. They are forked, not spawned, so that they start at once with torch
imported and the merge planned; each writes its own part of the output files (see shard_writer.py)
and sends back only progress, and an error's message if it fails. The standard library's pools
would pickle every task and result, and a pool of forked workers outlives the merge.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Iterator

from exme.errors import ExmeError

Task = Callable[[Callable[[], None]], None]  # runs one part, calling its argument after each step

_STEP = b"."
_FAILED = b"!"
_PR_SET_PDEATHSIG = 1


class ForkedTasks:
    """Tasks started each in a forked process, which exits when its task ends."""

    def __init__(self, tasks: list[Task]) -> None:
        self._children: list[tuple[int, int]] = []  # (pid, read end of its pipe)
        self._received: dict[int, bytes] = {}  # what each pipe sent after its last step
        try:
            for task in tasks:
                self._start(task)
        except BaseException:
            self.stop()
            raise

    def _start(self, task: Task) -> None:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code (its cleanups are not ours)
            status = 1
            try:
                _end_with(parent)
                os.close(read_end)
                task(lambda: os.write(write_end, _STEP))
                status = 0
            except BaseException as error:
                name = "" if isinstance(error, ExmeError) else f"{type(error).__name__}: "
                with contextlib.suppress(BaseException):
                    os.write(write_end, _FAILED + f"{name}{error}".encode(errors="replace"))
            finally:
                os._exit(status)
        os.close(write_end)
        self._children.append((pid, read_end))
        self._received[read_end] = b""

    def steps(self) -> int:
        """The steps the tasks reported since the last call, without waiting."""
        return sum(self._steps_in(read_end, wait=False) for _, read_end in self._children)

    def _steps_in(self, read_end: int, wait: bool) -> int:
        """Steps read from one pipe: those available, or (`wait`) all until the child closes it."""
        os.set_blocking(read_end, wait)
        steps = 0
        while True:
            try:
                data = os.read(read_end, 65536)
            except BlockingIOError:
                return steps
            if not data:
                return steps
            if self._received[read_end]:  # a failure's message goes on
                self._received[read_end] += data
                continue
            head, failed, message = data.partition(_FAILED)
            steps += len(head)
            if failed:
                self._received[read_end] = failed + message

    def wait(self, on_steps: Callable[[int], None]) -> None:
        """Wait for every task, passing on their steps; a failed task's error is raised here."""
        failures = []
        while self._children:
            pid, read_end = self._children[0]
            on_steps(self._steps_in(read_end, wait=True))
            _, status = os.waitpid(pid, 0)
            self._children.pop(0)
            os.close(read_end)
            if status:
                message = self._received[read_end].removeprefix(_FAILED).decode(errors="replace")
                failures.append(message or f"a merge process ended with status {status}")
        if failures:
            raise ExmeError(failures[0])

    def stop(self) -> None:
        """End the tasks still running (the merge failed elsewhere)."""
        for pid, read_end in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
        self._children = []


def _end_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux's prctl), so that a merge
    killed outright leaves no process running on."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request
        os._exit(1)


@contextlib.contextmanager
def forked(tasks: list[Task], on_steps: Callable[[int], None]) -> Iterator[ForkedTasks]:
    """The tasks running in forked processes while the body runs, then waited for, their steps
    passed on (a failed task's error raised); if the body fails, ended."""
    children = ForkedTasks(tasks)
    try:
        yield children
        children.wait(on_steps)
    except BaseException:
        children.stop()
        raise
