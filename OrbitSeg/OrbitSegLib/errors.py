"""Exceptions that carry a message meant for the user (CLI stderr line, Slicer error dialog, errors.csv)."""
from __future__ import annotations


class OrbitSegError(Exception):
    """A problem with the user's input or set-up, explained in one line. ``stage`` names the pipeline
    stage it was raised in (e.g. ``check input``), when one did."""

    stage: str | None = None


class CancelledError(OrbitSegError):
    """The user cancelled a running job."""
