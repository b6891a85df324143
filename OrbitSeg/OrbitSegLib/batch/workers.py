"""Batch worker processes: threads per process, the model loaded once per process, and the local pool.

:class:`WorkerPool` runs studies in ``workers`` spawned processes (so CUDA and OpenMP are safe), one
study at a time per worker, each calling :func:`runner.run_study`; a worker that dies fails exactly
the study it held. Threads: each worker gets ``available cores // workers`` unless ``threads`` is given.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator
from multiprocessing import connection
from pathlib import Path

import SimpleITK as sitk

from ..errors import OrbitSegError
from ..inference import configure_threads
from ..model_store import LoadedModel, load_model
from . import runner  # run_study, BatchConfig and StudyOutcome (runner imports this module)
from .studies import Study

Task = tuple[Study, str]
"""A study and its fingerprint."""


def available_cores() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(threads: int) -> None:
    """Use ``threads`` threads in torch and SimpleITK (in this process)."""
    configure_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


_MODELS: dict[tuple, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def process_model(config: runner.BatchConfig) -> LoadedModel:
    """The model of ``config``, loaded once per process (shared by a Dask worker's threads)."""
    key = (config.model, config.device, config.options)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(config.model, config.device, config.options)
        return _MODELS[key]


def _worker_main(conn, out_dir: Path, config: runner.BatchConfig, threads: int) -> None:
    """A worker process: load the model once, then run the studies the parent sends until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates its workers
    logging.getLogger("OrbitSegLib").addHandler(logging.NullHandler())  # warnings go to the batch log, not stderr
    set_threads(threads)
    try:
        model = process_model(config)
    except OrbitSegError as exc:
        conn.send(("fatal", str(exc)))
        return
    while (task := conn.recv()) is not None:
        study, fingerprint = task
        conn.send(("done", runner.run_study(study, out_dir, fingerprint, model)))
    # Every output is written and closed (atomically) and the results are sent: skip the interpreter's
    # teardown (about 0.6 s with torch loaded), which the batch would otherwise wait for.
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class WorkerPool:
    """Worker processes (spawned, so CUDA and OpenMP are safe), each fed one study at a time.

    The parent knows which study each worker holds, so a worker that dies (killed for memory, a
    crash) fails exactly that study; a new worker takes its place. A worker that finds no study left
    is told to stop at once, so it exits while the others finish theirs.
    """

    def __init__(self, workers: int, out_dir: Path, config: runner.BatchConfig):
        self.context = multiprocessing.get_context("spawn")
        self.args = (out_dir, config, config.threads or max(1, available_cores() // workers))
        self.slots: dict[int, tuple] = {}
        self.retired: list = []
        self.workers = workers

    def _start(self, slot: int) -> None:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker_main, args=(child, *self.args), daemon=True,
                                       name=f"orbitseg-batch-{slot}")
        process.start()
        child.close()
        self.slots[slot] = (process, parent)

    def run(self, tasks: list[Task]) -> Iterator[runner.StudyOutcome]:
        pending = deque(tasks)
        holding: dict[int, Task] = {}
        completed = False
        try:
            for slot in range(min(self.workers, len(pending))):
                self._start(slot)
                holding[slot] = pending.popleft()
                self.slots[slot][1].send(holding[slot])
            while holding:
                waitables = [self.slots[s][1] for s in holding] + [self.slots[s][0].sentinel for s in holding]
                connection.wait(waitables, timeout=1.0)
                for slot in list(holding):
                    process, conn = self.slots[slot]
                    message = self._receive(conn)
                    if message is None and process.is_alive():
                        continue
                    study, _ = holding.pop(slot)
                    if message is not None and message[0] == "fatal":
                        raise OrbitSegError(message[1])
                    if message is None:
                        outcome = _crashed(study, process.exitcode)
                        self._stop(slot, wait=0.0)
                        if pending:
                            self._start(slot)
                    else:
                        outcome = message[1]
                    if pending:  # keep the worker busy while the outcome is logged
                        holding[slot] = pending.popleft()
                        self.slots[slot][1].send(holding[slot])
                    elif slot in self.slots:
                        self._retire(slot)
                    yield outcome
            completed = True
        finally:
            for slot in list(self.slots):
                self._stop(slot, wait=2.0 if completed else 0.0)
            for process in self.retired:
                self._end(process, wait=2.0 if completed else 0.0)
            self.retired.clear()

    @staticmethod
    def _receive(conn):
        try:
            return conn.recv() if conn.poll() else None
        except (EOFError, OSError):
            return None

    def _retire(self, slot: int) -> None:
        """Ask an idle worker to exit without waiting for it; :meth:`run` reaps it at the end."""
        process, conn = self.slots.pop(slot)
        self._ask_to_exit(conn)
        conn.close()
        self.retired.append(process)

    def _stop(self, slot: int, wait: float) -> None:
        """End a worker: ask it to finish, wait up to ``wait`` seconds, then terminate it."""
        process, conn = self.slots.pop(slot)
        self._ask_to_exit(conn)
        self._end(process, wait)
        conn.close()

    @staticmethod
    def _ask_to_exit(conn) -> None:
        try:
            conn.send(None)
        except OSError:
            pass

    @staticmethod
    def _end(process, wait: float) -> None:
        """Wait up to ``wait`` seconds for a worker to exit, then terminate it."""
        process.join(timeout=wait)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def _crashed(study: Study, exitcode: int | None) -> runner.StudyOutcome:
    hint = " (killed, for example for lack of memory)" if exitcode in (-signal.SIGKILL, 137) else ""
    return runner.StudyOutcome(study.id, "failed", str(study.image), "worker",
                        f"the worker process stopped unexpectedly with exit code {exitcode}{hint}")
