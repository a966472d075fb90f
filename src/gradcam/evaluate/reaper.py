"""A watchdog that ends what a process started once that process is gone, even by ``kill -9``.

``gradcam evaluate --ray`` starts a local Ray cluster; killed with SIGKILL it runs no
``ray.shutdown()``, and Ray's agents (a dashboard agent and a runtime-env agent, 85 MB each)
outlive it, retrying a control store that died with it. The runner starts this file as a
script (standard library only: no torch to import) in a session of its own::

    python reaper.py PARENT_PID

While ``PARENT_PID`` runs, it notes every process descended from it (with its start time, so a
reused pid is never taken for one of them); once it is gone, it kills those still running, and
exits. Linux only (it reads ``/proc``); elsewhere it exits at once. The runner stops it after a
normal ``ray.shutdown()``.

Examples:
    >>> import subprocess
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    >>> child.pid in descendants(os.getpid(), _table())
    True
    >>> child.kill(); _ = child.wait()
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["descendants", "main"]

#: Seconds between two looks at the process table.
INTERVAL = 0.5


def _table() -> dict[int, tuple[int, str]]:
    """``{pid: (parent pid, start time)}`` of every process, from ``/proc``."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> dict[int, str]:
    """``{pid: start time}`` of the processes descended from ``root`` in ``table``."""
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def main(parent: int) -> None:
    """Note ``parent``'s descendants until it is gone, then kill those still running."""
    if not Path("/proc/self/stat").exists():
        return
    noted: dict[int, str] = {}
    while True:
        table = _table()
        if parent not in table:
            break
        noted |= descendants(parent, table)
        time.sleep(INTERVAL)
    noted.pop(os.getpid(), None)
    table = _table()
    for pid, started in noted.items():
        if pid in table and table[pid][1] == started:  # the same process, not a reused pid
            with contextlib.suppress(OSError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]))
