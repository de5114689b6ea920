"""Fetch real camera files for the I/O, EXIF and manifest tests, pinned by SHA-256.

The files come from piexif's source distribution on PyPI (``tests/images``): JPEGs straight
from eight camera makers' bodies (reduced to 80×80 by piexif's author, EXIF kept), a
grayscale Casio JPEG and a Casio TIFF re-saved by paint.net. Nobody in this project made
them, so they test the readers on what cameras really write.

The archive is downloaded once with ``pip download --no-binary :all: --no-deps`` into a cache
(``$AGETRACE_TEST_DATA``, default ``~/.cache/agetrace-test-data``); the archive and every
extracted file are checked against the pinned hashes on each use. Run this module as a script
to fill the cache ahead of an offline run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SDIST_NAME = "piexif"
SDIST_VERSION = "1.1.3"
SDIST_FILENAME = "piexif-1.1.3.zip"
SDIST_SHA256 = "83cb35c606bf3a1ea1a8f0a25cb42cf17e24353fd82e87ae3884e74a302a5f1b"
MEMBER_FOLDER = "piexif-1.1.3/tests/images"

#: Extracted file name -> SHA-256.
CAMERA_FILES = {
    "r_canon.jpg": "a34396c60d3d4031dba43d362fbdc4bc00fdcba9d790404ec0b8142c23f46cec",
    "r_casio.jpg": "866ba80fb7bf6f0449c50e320e2f394cbbe5f5fea30ef2086bed89498fd1f195",
    "r_olympus.jpg": "3d2a6eeebd694dbe0fb3854abc191eea2f32226da4914daa17572fee93df1002",
    "r_pana.jpg": "5e6b13b6c27ef2c5c2e635711b7a435e91b4a6a9eb8c67047063f00d28c8bf87",
    "r_pen.jpg": "1027d4ab14ac58b0e049c52f7a04c856f26553b591ecc4fe1ac59a9f8b2e7064",
    "r_ricoh.jpg": "1f90ebe39c2b6edce460d8347623bb19e747f37637e0198ed49edd4b56e7ef40",
    "r_sigma.jpg": "d0fa563625781a90e1fc9a567c669533dbc1a7e2b68aea7b7ee17426e4e4a87c",
    "r_sony.jpg": "b18f195ae3ac02b34ec58051f579d934d12361eb558ed22a96435cf6fcd18a12",
    "02.jpg": "2decffacd67a53482a43bfa4df36f9119f92830d8cb6e6f42aa090c1ccaf6c31",
    "L01.jpg": "2251d491de7242891aa776b149c47658ccd355c293745a4a56fb84cfcd754efd",
    "01.tif": "58b11b46010c14e4340480e41215aaa5314f55191a65790f76a139ba7dacdb77",
}

OFFLINE_VARIABLE = "AGETRACE_OFFLINE"
CACHE_VARIABLE = "AGETRACE_TEST_DATA"


class FetchError(RuntimeError):
    """The camera files could not be downloaded or did not match their pinned hashes."""


class OfflineError(FetchError):
    """The files are not cached and AGETRACE_OFFLINE=1 forbids downloading them."""


def cache_dir() -> Path:
    """The cache folder: ``$AGETRACE_TEST_DATA`` or ``~/.cache/agetrace-test-data``."""
    configured = os.environ.get(CACHE_VARIABLE)
    return Path(configured) if configured else Path.home() / ".cache" / "agetrace-test-data"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_camera_files(cache: Path | None = None) -> Path:
    """Return a folder holding :data:`CAMERA_FILES`, each verified against its SHA-256.

    Downloads and extracts piexif's source distribution if needed.

    Raises
    ------
    OfflineError
        If the files are not cached and ``AGETRACE_OFFLINE=1``.
    FetchError
        If pip fails or a hash does not match.
    """
    cache = cache or cache_dir()
    target = cache / f"{SDIST_NAME}-{SDIST_VERSION}-images"
    if not all(_matches(target / name, digest) for name, digest in CAMERA_FILES.items()):
        archive = _archive(cache)
        _extract(archive, target)
    for name, digest in CAMERA_FILES.items():
        actual = sha256_of(target / name)
        if actual != digest:
            raise FetchError(f"{target / name} has SHA-256 {actual}, expected {digest}: "
                             f"delete {cache} and run the tests again")
    return target


def _matches(path: Path, digest: str) -> bool:
    return path.is_file() and sha256_of(path) == digest


def _archive(cache: Path) -> Path:
    archive = cache / SDIST_FILENAME
    if _matches(archive, SDIST_SHA256):
        return archive
    if os.environ.get(OFFLINE_VARIABLE) == "1":
        raise OfflineError(f"real camera files are not cached in {cache} and {OFFLINE_VARIABLE}=1; "
                           f"run `python tests/fetch_camera_files.py` once with network access")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                   "--disable-pip-version-check", "--quiet", f"{SDIST_NAME}=={SDIST_VERSION}",
                   "-d", download_dir]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"`{' '.join(command)}` failed to run: {exc}") from exc
        downloaded = Path(download_dir) / SDIST_FILENAME
        if result.returncode != 0 or not downloaded.is_file():
            raise FetchError(f"could not download {SDIST_NAME}=={SDIST_VERSION} from the package index "
                             f"(exit {result.returncode}):\n{result.stderr.strip()[-2000:]}\n"
                             f"Set {OFFLINE_VARIABLE}=1 to skip these tests without network access.")
        actual = sha256_of(downloaded)
        if actual != SDIST_SHA256:
            raise FetchError(f"{SDIST_FILENAME} has SHA-256 {actual}, expected {SDIST_SHA256}: "
                             "the index served a different file; do not trust it")
        os.replace(downloaded, archive)
    return archive


def _extract(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as bundle:
        for name in CAMERA_FILES:
            with bundle.open(f"{MEMBER_FOLDER}/{name}") as source, \
                    tempfile.NamedTemporaryFile(dir=target, delete=False) as sink:
                shutil.copyfileobj(source, sink)
            os.chmod(sink.name, 0o644)
            os.replace(sink.name, target / name)


if __name__ == "__main__":
    print(fetch_camera_files())
