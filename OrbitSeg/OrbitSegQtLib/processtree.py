"""Stopping a background process together with every process it started (no Qt, no Slicer).

``PythonSlicer`` is a launcher: it sets up Slicer's environment and starts the real interpreter as
its child, so killing only the process the panel started leaves the interpreter running (and holding
the GPU). :func:`kill_tree` stops the whole tree: with psutil when it is installed, otherwise with
``taskkill /T`` on Windows and the process table from ``ps`` elsewhere.
"""
from __future__ import annotations

import os
import signal
import subprocess


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (children first, then theirs), from ``ps``."""
    try:
        table = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True,
                               check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(fields[0]))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found


def kill_tree(pid: int, use_psutil: bool = True) -> list[int]:
    """Kill ``pid`` and all its descendants; returns the descendants' ids that were signalled.

    Descendants are listed before any process is killed (a killed parent's children would be
    re-parented and lost). ``use_psutil=False`` skips psutil (used by the tests).
    """
    if os.name == "nt":
        subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False)
        return []
    try:
        if not use_psutil:
            raise ImportError
        import psutil

        tree = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        tree = descendants(pid)
    except Exception:  # psutil.NoSuchProcess: already gone
        return []
    for process in [pid, *tree]:
        try:
            os.kill(process, signal.SIGKILL)
        except OSError:  # already ended
            pass
    return tree
