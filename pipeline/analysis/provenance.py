"""What a run records about itself: configuration, seeds, package versions, inputs' hashes."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from pipeline.data.atomic import atomic_write_text

__all__ = ["package_versions", "code_fingerprint", "write_json", "read_json", "utc_now"]

_PACKAGES = ("agetrace", "numpy", "scipy", "numba", "llvmlite", "scikit-learn", "scikit-image", "pillow",
             "simplejpeg", "rawpy", "tifffile", "matplotlib", "tqdm", "torch", "dask", "distributed")


def package_versions() -> dict:
    """Versions of Python, the platform and every package that can change a result."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: the packages whose source computes results (their every .py file enters the fingerprint)
_CODE_PACKAGES = ("baselines", "kernels", "pipeline")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the source of the packages that compute results (``baselines``, ``kernels``,
    ``pipeline``): file paths relative to the project and their bytes, in sorted order.

    The package version does not change when the code does between releases; this does, so a
    run folder resumed after the code changed is refused instead of mixing results of two
    versions. (Any edit counts, a comment too: the safe side.)
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def utc_now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def write_json(path, data) -> None:
    """Write JSON atomically (sorted keys, indented, numpy scalars converted)."""
    def default(obj):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "isoformat"):
            return obj.isoformat()
        return str(obj)

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=default) + "\n")


def read_json(path):
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
