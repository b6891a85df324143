"""OrbitSeg batch mode from 3D Slicer's Python: the same code as ``orbitseg batch``.

    Slicer --no-splash --no-main-window --python-script <path>/OrbitSeg/OrbitSegScripts/batch.py -- STUDIES --out DIR [options]
    PythonSlicer <path>/OrbitSeg/OrbitSegScripts/batch.py STUDIES --out DIR [options]

``<path>/OrbitSeg`` is the module folder holding the ``OrbitSegLib`` package and this script's folder (in
an installed extension: ``<extension>/lib/Slicer-X.Y/qt-scripted-modules``). The script lives in a
subfolder because Slicer loads every ``.py`` file at the top of a module folder as a module. The options are those of
``orbitseg batch --help``. The exit status is the command's: 0 all studies finished, 1 some failed,
130 interrupted.
"""
from __future__ import annotations

import os
import sys

MODULE_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if MODULE_FOLDER not in sys.path:
    sys.path.insert(0, MODULE_FOLDER)


def script_arguments(argv: list[str]) -> list[str]:
    """The arguments after this script's path (Slicer keeps its own before it), without a leading ``--``."""
    args = argv[1:]
    for index, arg in enumerate(argv):
        if arg.endswith(".py") and os.path.abspath(arg) == os.path.abspath(__file__):
            args = argv[index + 1:]
            break
    return args[1:] if args[:1] == ["--"] else args


def use_plain_python_for_workers() -> None:
    """Inside the Slicer application ``sys.executable`` may be the application itself; worker processes
    (``--workers N``) must start Slicer's plain Python, ``PythonSlicer``, which lies beside it."""
    import multiprocessing
    import shutil

    if os.path.basename(sys.executable).lower().startswith("python"):
        return
    folder = os.path.dirname(sys.executable)
    for candidate in (os.path.join(folder, "PythonSlicer"), os.path.join(folder, "PythonSlicer.exe"),
                      shutil.which("PythonSlicer")):
        if candidate and os.path.isfile(candidate):
            multiprocessing.set_executable(candidate)
            return


def main(argv: list[str] | None = None) -> int:
    missing = []
    for module in ("torch", "SimpleITK", "monai", "slicerio", "matplotlib", "tqdm"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        from OrbitSegLib.protocol import error_line

        print(error_line(f"this Python lacks OrbitSeg's dependencies ({', '.join(missing)}); open the "
                         "OrbitSeg module in Slicer once to install them"), file=sys.stderr)
        return 1
    use_plain_python_for_workers()
    from OrbitSegLib.cli import main as cli_main

    return cli_main(["batch", *script_arguments(sys.argv if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
