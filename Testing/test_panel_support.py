"""The panels' Qt-free support in ``OrbitSegQtLib``, with real processes: stopping a launcher together
with the interpreter it started (Cancel), and forgetting the libraries so that Reload reads edited files.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "OrbitSeg"))

from OrbitSegQtLib import processtree  # noqa: E402  (no Qt)

LAUNCHER = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(120)'])"
"""Like PythonSlicer: a process that starts the real interpreter as its child and waits for it."""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("use_psutil", [False, True])
def test_cancel_stops_the_launcher_and_the_interpreter_it_started(use_psutil):
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER])
    deadline = time.time() + 60
    while not (children := processtree.descendants(launcher.pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert len(children) == 1 and not gone(children[0])
    assert processtree.kill_tree(launcher.pid, use_psutil=use_psutil) == children
    launcher.wait(timeout=10)
    deadline = time.time() + 10
    while not gone(children[0]) and time.time() < deadline:
        time.sleep(0.05)
    assert gone(children[0]), "the interpreter outlived its launcher"


def test_unloading_the_libraries_makes_reload_read_the_edited_files(tmp_path):
    for package in ("OrbitSegLib", "OrbitSegQtLib"):
        shutil.copytree(REPO / "OrbitSeg" / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    program = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import OrbitSegLib.protocol, OrbitSegQtLib
assert not hasattr(OrbitSegLib.protocol, "EDITED")
with open({str(tmp_path / "OrbitSegLib" / "protocol.py")!r}, "a", encoding="utf-8") as handle:
    handle.write("\\nEDITED = True\\n")
names = OrbitSegQtLib.unloadLibraries()
assert "OrbitSegLib.protocol" in names and "OrbitSegQtLib" in names, names
assert not [n for n in sys.modules if n.split(".")[0] in OrbitSegQtLib.PACKAGES]
import OrbitSegLib.protocol
assert OrbitSegLib.protocol.EDITED
"""
    done = subprocess.run([sys.executable, "-B", "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
