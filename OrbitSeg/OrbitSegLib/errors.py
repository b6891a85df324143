"""Exceptions that carry a message meant for the user (CLI stderr line, Slicer error dialog, errors.csv)."""


class OrbitSegError(Exception):
    """A problem with the user's input or set-up, explained in one line."""


class CancelledError(OrbitSegError):
    """The user cancelled a running job."""
