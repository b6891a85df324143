"""The panels' background process: Slicer's Python running the ``orbitseg`` command line in a ``qt.QProcess``.

The command line, its progress lines and its error line are :mod:`OrbitSegLib.protocol`'s; this
module only starts the process, feeds its output through the protocol's decoders and stops it.
"""
from __future__ import annotations

import os
import shutil
import time

import qt

import slicer
from OrbitSegLib import protocol

from .processtree import kill_tree


def pythonExecutable() -> str:
    """Slicer's Python launcher, ``PythonSlicer``, found as Slicer finds it (``slicer.util.pip_install``):
    on the ``PATH`` Slicer sets up, else in Slicer's ``bin`` folder. Never ``sys.executable``, which inside
    Slicer is the application, not a Python."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    candidate = os.path.join(slicer.app.slicerHome, "bin", name)
    if os.path.isfile(candidate):
        return candidate
    raise RuntimeError(f"Slicer's Python ({name}) was found neither on the PATH nor in {os.path.dirname(candidate)}")


class BackgroundProcess:
    """Runs ``orbitseg <arguments>`` in Slicer's Python as a ``qt.QProcess``.

    ``onProgress(fraction, message)`` gets the JSON progress lines, ``onLog(line)`` every other
    output line, ``onFinished(exitCode, cancelled, errorMessage)`` the end (``errorMessage`` is empty
    on success). :meth:`cancel` kills the process and every process it started (``PythonSlicer`` is a
    launcher that starts the real interpreter as a child), with or without psutil.
    """

    def __init__(self, onProgress, onLog, onFinished):
        self.onProgress, self.onLog, self.onFinished = onProgress, onLog, onFinished
        self.process = None
        self.cancelled = False
        self.done = False
        self.exitCode = None
        self.stderr = protocol.LineSplitter()
        self.stdout = protocol.LineSplitter()

    def start(self, arguments: list[str]) -> None:
        command = protocol.cli_command(pythonExecutable(), arguments)
        self.onLog("$ " + " ".join(command[:2] + ["<bootstrap>"] + command[3:]))
        self.process = qt.QProcess()
        environment = qt.QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(environment)
        self.process.connect("readyReadStandardError()", self._readStandardError)
        self.process.connect("readyReadStandardOutput()", self._readStandardOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)
        self.process.setProgram(command[0])
        self.process.setArguments(command[1:])
        self.process.start()

    def isRunning(self) -> bool:
        return self.process is not None and not self.done

    def cancel(self) -> None:
        if not self.isRunning():
            return
        self.cancelled = True
        self.onLog("Cancelling: stopping the OrbitSeg process")
        pid = int(self.process.processId())
        if pid > 0:
            kill_tree(pid)
        self.process.kill()

    def waitForFinished(self, timeoutSeconds: float = 3600.0) -> bool:
        """Block (processing events) until the process ended; used by self-tests and scripts."""
        deadline = time.time() + timeoutSeconds
        while self.isRunning() and time.time() < deadline:
            self.process.waitForFinished(200)
            slicer.app.processEvents()
        return not self.isRunning()

    @staticmethod
    def _text(data) -> str:
        raw = data.data()
        return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", errors="replace")

    def _readStandardError(self):
        for line in self.stderr.feed(self._text(self.process.readAllStandardError())):
            self._handleLine(line)

    def _readStandardOutput(self):
        for line in self.stdout.feed(self._text(self.process.readAllStandardOutput())):
            self.onLog(line)

    def _handleLine(self, line: str) -> None:
        progress = protocol.parse_progress(line)
        if progress is not None:
            self.onProgress(progress.fraction, progress.message)
        elif line.strip():
            self.onLog(line)

    def _onError(self, error):
        if error == qt.QProcess.FailedToStart and not self.done:
            self._finish(-1, f"could not start Slicer's Python ({self.process.errorString()})")

    def _onFinished(self, exitCode, exitStatus):
        self._readStandardError()
        self._readStandardOutput()
        for line in self.stderr.flush():
            self._handleLine(line)
        for line in self.stdout.flush():
            self.onLog(line)
        crashed = exitStatus == qt.QProcess.CrashExit
        code = exitCode if not crashed else -1
        message = "" if code == 0 and not self.cancelled else protocol.error_message(self.stderr.lines, code)
        self._finish(code, message)

    def _finish(self, code: int, message: str) -> None:
        if self.done:
            return
        self.done, self.exitCode = True, code
        self.onFinished(code, self.cancelled, "" if self.cancelled else message)
