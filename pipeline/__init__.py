"""agetrace's pipeline: the command lines and everything that touches files and experiments.

``agetrace <tool> ...`` (:mod:`pipeline.__main__`) runs the same command lines as
``python -m pipeline.<tool> ...``. :data:`__version__` is the installed distribution's version.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["__version__"]

#: the distribution's name (``pip install agetrace``; the console command ``agetrace``)
DISTRIBUTION = "agetrace"


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed, pyproject's.

    ``pyproject.toml``'s ``version`` is the one source: installing copies it into the
    distribution's metadata. ``0+unknown`` when neither can be read (a copied package folder).
    """
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        with pyproject.open("rb") as handle:
            project = tomllib.load(handle)["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"
    return str(project["version"]) if project.get("name") == DISTRIBUTION and "version" in project else "0+unknown"


#: the version of agetrace, e.g. ``"0.1.0"``
__version__ = _version()
