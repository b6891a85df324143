"""The phantom's settings: which anatomy model and which scanner world make a case, and the study id
that names a case of a setting. A leaf module (no imports), so the command line can offer the choices
without loading the phantom itself (:mod:`.phantom`)."""

ANATOMY_MODELS = ("classic", "sweep")  # phantom.orbit (wall surfaces, spindle tubes) or phantom.sweep (cone, area profiles)
WORLDS = ("default", "wide")  # phantom.scanner: the bundled models' training protocols, or any clinical CT


def case_id(seed: int, index: int, anatomy: str = "classic", world: str = "default") -> str:
    """A phantom case's study id: ``phantom_<seed>_<index:04d>`` for the classic anatomy in the default
    world, ``phantom_<anatomy>_<world>_<seed>_<index:04d>`` otherwise."""
    if (anatomy, world) == ("classic", "default"):
        return f"phantom_{seed}_{index:04d}"
    return f"phantom_{anatomy}_{world}_{seed}_{index:04d}"
