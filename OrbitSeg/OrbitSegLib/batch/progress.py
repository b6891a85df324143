"""Batch progress on stderr: a tqdm bar (studies done, failed, ETA), JSON lines for a parent process, or nothing."""
from __future__ import annotations

import sys

from ..protocol import progress_line
from .runner import BatchCounts, StudyOutcome


class BatchProgress:
    """A :data:`runner.ProgressFn` printing in ``mode`` ``text``, ``json`` or ``none``; call :meth:`close` at the end.

    JSON lines (:func:`protocol.progress_line`) carry ``progress`` (0..1 of the studies to run) and ``message``
    as ``orbitseg segment``'s do, plus ``done``, ``failed``, ``skipped`` and ``total``.
    """

    def __init__(self, mode: str = "text"):
        self.mode = mode
        self.bar = None

    def __call__(self, counts: BatchCounts, outcome: StudyOutcome | None) -> None:
        if outcome is None:
            message = (f"{counts.total} studies: {counts.skipped} finished earlier (skipped), "
                       f"{counts.to_run} to run")
        elif outcome.status == "failed":
            message = f"{outcome.id} failed at {outcome.stage}: {outcome.reason}"
        else:
            message = f"{outcome.id} done in {outcome.seconds:.1f} s"
        if self.mode == "json":
            fraction = counts.finished_now / counts.to_run if counts.to_run else 1.0
            print(progress_line(fraction, message, done=counts.done, failed=counts.failed, skipped=counts.skipped,
                                total=counts.total), file=sys.stderr, flush=True)
        elif self.mode == "text":
            self._text(counts, outcome, message)

    def _text(self, counts: BatchCounts, outcome: StudyOutcome | None, message: str) -> None:
        from tqdm import tqdm

        if outcome is None:
            print(message, file=sys.stderr, flush=True)
            self.bar = tqdm(total=counts.to_run, desc="studies", unit="study", file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
            self.bar.set_postfix_str("done 0, failed 0")
            return
        if outcome.status == "failed":
            self.bar.write(f"  {message}", file=sys.stderr)
        self.bar.set_postfix_str(f"done {counts.done}, failed {counts.failed}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
