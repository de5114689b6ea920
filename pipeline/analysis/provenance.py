"""What a run records about itself: configuration, seeds, package versions, inputs' hashes, the
command line and the source's git commit."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import rawpy
from PIL import features as pil_features

import pipeline
from pipeline.data.atomic import atomic_write_text
from pipeline.logs import get_logger

__all__ = ["package_versions", "agetrace_version", "native_library_versions", "decoder_versions", "source_revision",
           "command_line",
           "code_fingerprint", "write_json", "read_json", "utc_now"]

logger = get_logger(__name__)

_PACKAGES = ("agetrace", "numpy", "scipy", "numba", "llvmlite", "scikit-learn", "scikit-image", "pillow",
             "simplejpeg", "rawpy", "tifffile", "matplotlib", "tqdm", "torch", "dask", "distributed")


def package_versions() -> dict:
    """Versions of Python, the platform and everything that can change a result.

    Returns
    -------
    dict
        ``python``, ``platform``, each package of ``_PACKAGES`` (None when not installed), the
        native decoders (:func:`native_library_versions`: ``libraw``, ``libjpeg_turbo``), the decoder
        of each format with its settings (``decoders``, :func:`decoder_versions`), and,
        when the source runs from a git checkout, ``git_commit`` and ``git_dirty``
        (:func:`source_revision`; absent otherwise).
    """
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions.update(native_library_versions())
    versions["decoders"] = decoder_versions()
    revision = source_revision()
    if revision is not None:
        versions["git_commit"], versions["git_dirty"] = revision["commit"], revision["dirty"]
    return versions


def agetrace_version() -> str | None:
    """agetrace's version: ``pipeline.__version__`` where the package defines it, else the installed
    distribution's version; None for a source tree that is neither."""
    version = getattr(pipeline, "__version__", None)
    if version:
        return str(version)
    try:
        return metadata.version("agetrace")
    except metadata.PackageNotFoundError:
        return None


def native_library_versions() -> dict:
    """Versions of the native libraries that decode the images: LibRaw (through rawpy) and
    libjpeg-turbo (through Pillow); None where a version cannot be told."""
    try:
        libraw = ".".join(str(part) for part in rawpy.libraw_version)
    except (AttributeError, TypeError):
        libraw = None
    try:
        jpeg = pil_features.version("libjpeg_turbo")
    except (ValueError, AttributeError):  # an older Pillow that does not know the feature
        jpeg = None
    return {"libraw": libraw, "libjpeg_turbo": jpeg}


_LIBJPEG_TURBO_BANNER = re.compile(rb"libjpeg-turbo version ([0-9][0-9A-Za-z.\-]*)")


@lru_cache(maxsize=1)
def _simplejpeg_libjpeg_turbo() -> str | None:
    """Version of the libjpeg-turbo that simplejpeg's extension is built with (it is linked in
    statically, so it is not Pillow's): the banner libjpeg-turbo compiles into the library."""
    try:
        import simplejpeg._jpeg as extension

        found = _LIBJPEG_TURBO_BANNER.search(Path(extension.__file__).read_bytes())
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    return found.group(1).decode("ascii") if found else None


def decoder_versions() -> dict:
    """The decoder of each image format :func:`pipeline.data.imageio.read_image` reads, with its version
    and the settings that decide the pixels.

    Returns
    -------
    dict
        ``jpeg``: simplejpeg's version, the libjpeg-turbo built into it (None where it cannot be
        told), and its settings (accurate integer DCT, fancy upsampling, strict: bit-identical to
        libjpeg-turbo's defaults, as Pillow decodes); ``png``: Pillow; ``tiff``: tifffile (Pillow
        for codecs it lacks); ``dng`` and ``raw``: rawpy and its LibRaw, mosaic as stored.
    """
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    libraw = native_library_versions()["libraw"]
    return {
        "jpeg": {"decoder": "simplejpeg", "version": version("simplejpeg"),
                 "libjpeg_turbo": _simplejpeg_libjpeg_turbo(),
                 "settings": "fastdct=False (accurate integer DCT), fastupsample=False (fancy upsampling), strict"},
        "png": {"decoder": "Pillow", "version": version("pillow")},
        "tiff": {"decoder": "tifffile", "version": version("tifffile"), "fallback": f"Pillow {version('pillow')}"},
        "raw": {"decoder": "rawpy", "version": version("rawpy"), "libraw": libraw,
                "settings": "raw_image_visible (CFA mosaic, no processing)"},
    }


@lru_cache(maxsize=1)
def source_revision() -> dict | None:
    """The git commit of agetrace's source and whether it has changes, when it runs from a checkout.

    ``git rev-parse HEAD`` and ``git status --porcelain`` are run in the folder holding the
    ``pipeline`` package; the answer counts only when that folder is the top of the checkout
    (agetrace installed inside some other project's repository is not that project's commit).

    Returns
    -------
    dict or None
        ``{"commit": <40 hex digits>, "dirty": bool}`` (dirty: ``git status --porcelain`` lists
        something), or None when git is not installed, the source is not a git checkout, or git
        fails: never an error, since a run does not need it.
    """
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=30, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        logger.debug("no git revision recorded for %s: %s", root, exc)
        return None


def command_line() -> dict:
    """The command line of this process, as run.

    Returns
    -------
    dict
        ``argv`` (:data:`sys.argv` as it is), ``entry_point`` (``python -m pipeline.ml_age`` for
        a module run with ``-m``, else the program's file name, e.g. ``agetrace``) and ``line``
        (the entry point and the arguments, quoted for a POSIX shell).
    """
    argv = [str(a) for a in sys.argv]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        name = spec.name.removesuffix(".__main__")
        entry = f"python -m {name}"
    elif argv and argv[0] in ("-c", "-"):
        entry = f"python {argv[0]}"
    else:
        entry = os.path.basename(argv[0]) if argv and argv[0] else "python"
    return {"argv": argv, "entry_point": entry, "line": " ".join([entry, shlex.join(argv[1:])]).strip()}


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
