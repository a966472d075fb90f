"""The watchdog that ends a killed run's Ray processes (issue 30, item 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gradcam.evaluate.reaper as reaper

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

# A parent that starts a child sleeping in a session of its own (as Ray's agents outlive
# the raylet that started them), prints its pid, then waits to be killed.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
    " start_new_session=True)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_what_a_killed_process_started_goes_with_it() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    script = Path(reaper.__file__)
    watchdog = subprocess.Popen([sys.executable, str(script), str(parent.pid)])
    try:
        time.sleep(3 * reaper.INTERVAL)  # it has noted the child
        assert _running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        watchdog.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child)
    finally:
        for pid in (child, parent.pid):
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        watchdog.kill()


def test_descendants_follow_the_tree() -> None:
    table = {10: (1, "a"), 11: (10, "b"), 12: (11, "c"), 13: (1, "d")}
    assert reaper.descendants(10, table) == {11: "b", 12: "c"}
