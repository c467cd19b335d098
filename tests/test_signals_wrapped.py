"""A SIGTERM that lands while Python builds a class (an import: matplotlib's axes, seen in CI) comes out wrapped in
a RuntimeError ("Error calling __set_name__"); :func:`interrupts_unwrapped` raises it again as the interrupt, so
the command ends with 143 and its continue line, not exit 1 and a traceback. A real signal, in a fresh process."""
from __future__ import annotations

import subprocess
import sys

from helpers import REPO, ctrl_c_works

LANDS_IN_SET_NAME = """
import os, signal, sys
from common.run.signals import exit_code, interrupts_unwrapped, raise_on_sigterm
raise_on_sigterm()
class Landing:
    def __set_name__(self, owner, name):  # the handler runs at the next bytecode boundary: inside this call
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10000):
            pass
def build():
    return type("Owner", (), {"attr": Landing()})
try:
    build()
except RuntimeError as e:
    print("wrapped:", type(e.__cause__).__name__, flush=True)
raise_on_sigterm()  # the handler ignores a second SIGTERM until it is handled: install it again
try:
    with interrupts_unwrapped():
        build()
except KeyboardInterrupt as e:
    print("unwrapped:", type(e).__name__, flush=True)
    sys.exit(exit_code(e))
"""

NOT_OURS = """
from common.run.signals import interrupts_unwrapped
try:
    with interrupts_unwrapped():
        raise RuntimeError("a plain error") from KeyboardInterrupt()  # an interrupt none of our handlers raised
except RuntimeError as e:
    print("kept:", e)
"""


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          preexec_fn=ctrl_c_works)


def test_a_sigterm_wrapped_by_python_is_raised_again_as_itself():
    proc = run(LANDS_IN_SET_NAME)
    assert proc.stdout.split("\n")[:2] == ["wrapped: Terminated", "unwrapped: Terminated"], proc.stderr[-2000:]
    assert proc.returncode == 143 and "Traceback" not in proc.stderr


def test_other_errors_pass_through_unchanged():
    proc = run(NOT_OURS)
    assert proc.stdout.strip() == "kept: a plain error" and proc.returncode == 0, proc.stderr[-2000:]
