"""Commands a user can paste: the ``nmm-chaos`` executable named as it was invoked.

Every command the harness prints (a resume hint, a failure's replay line in a report
or a pytest message) starts with ``program()``: the bare name when that name finds the
same executable on ``PATH``, else its absolute path (``make run`` calls
``.venv/bin/nmm-chaos``, which is not on ``PATH``). Pure: reads ``sys.argv``,
``sys.executable`` and ``PATH``, prints nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

#: the console script ``pip install`` makes (pyproject.toml ``[project.scripts]``)
SCRIPT = "nmm-chaos"
#: modules that run the CLI under ``python -m``
_MODULES = ("harness", "harness.__main__", "harness.cli")


def program(argv0: str | None = None, *, executable: str | None = None,
            path: str | None = None, main_module: str | None = None) -> list[str]:
    """The argv prefix that runs ``nmm-chaos`` the way this process was run.

    ``nmm-chaos`` itself (``argv[0]`` names the script): that script, bare if ``PATH``
    finds it, else by absolute path. ``python -m harness``: this interpreter with
    ``-m harness``. Anything else (pytest's plugin, a Python program calling the
    library): the script installed beside this interpreter, else ``python -m harness``.
    The arguments default to ``sys.argv[0]``, ``sys.executable``, ``$PATH`` and the
    ``__main__`` module's name; they are parameters for tests.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = executable or sys.executable or "python3"
    if main_module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        main_module = getattr(spec, "name", "") or ""
    if main_module in _MODULES:
        return [_as_typed(executable, path), "-m", "harness"]
    if argv0 and Path(argv0).name == SCRIPT:
        return [_as_typed(argv0, path)]
    beside = Path(executable).parent / SCRIPT
    if beside.is_file() and os.access(beside, os.X_OK):
        return [_as_typed(str(beside), path)]
    return [_as_typed(executable, path), "-m", "harness"]


def command_line(*args: str, prefix: Sequence[str] | None = None) -> str:
    """One shell-quoted command line: ``program()`` (or ``prefix``) followed by ``args``."""
    return shlex.join([*(program() if prefix is None else prefix), *args])


def _as_typed(executable: str, path: str | None) -> str:
    """The bare name if ``PATH`` finds it in this same directory, else an absolute path.

    Directories are compared, not files: a venv's ``bin/python`` is a symlink to the
    system's, but only the venv's path runs with the venv's packages."""
    full = os.path.abspath(executable)
    name = os.path.basename(full)
    found = shutil.which(name, path=path if path is not None else os.environ.get("PATH"))
    if found is not None:
        try:
            if os.path.samefile(os.path.dirname(os.path.abspath(found)), os.path.dirname(full)):
                return name
        except OSError:
            pass
    return full
