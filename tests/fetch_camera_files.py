"""Fetch real camera files for the I/O, EXIF and manifest tests, pinned by SHA-256.

The files come from piexif's source distribution on PyPI (``tests/images``): JPEGs straight
from eight camera makers' bodies (reduced to 80×80 by piexif's author, EXIF kept), a
grayscale Casio JPEG and a Casio TIFF re-saved by paint.net. Nobody in this project made
them, so they test the readers on what cameras really write.

The archive is downloaded once with ``pip download --no-binary :all: --no-deps`` into a cache
(``$AGETRACE_TEST_DATA``, default ``~/.cache/agetrace-test-data``); the archive and every
extracted file are checked against the pinned hashes on each use. Run this module as a script
to fill the cache ahead of an offline run.

A second source, for the ExifTool backend's test (:func:`fetch_raw_samples`): camera raw files
in formats the built-in EXIF reader cannot parse (a Canon EOS M50 CR3 and a Fujifilm FinePix
S5Pro RAF), from ExifTool's own test images (``t/images`` of Image-ExifTool, whose expected
outputs ``t/CanonRaw_8.out`` and ``t/FujiFilm_4.out`` give their tags). They come from Debian's
source package ``libimage-exiftool-perl`` (the upstream tarball, repacked), downloaded with
``apt-get source --download-only`` through a private copy of the system's apt sources (as
``deb-src``), so nothing on the system changes. The upstream tarball and both files are pinned
by SHA-256; the files are the same in every release listed in :data:`EXIFTOOL_ORIG_TARBALLS`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
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

#: Debian source package holding ExifTool's test images, and its upstream tarballs -> SHA-256
#: (bookworm's and trixie's releases; the raw files below are identical in both).
EXIFTOOL_SOURCE_PACKAGE = "libimage-exiftool-perl"
EXIFTOOL_ORIG_TARBALLS = {
    "libimage-exiftool-perl_12.57+dfsg.orig.tar.xz": "9de7ccd6ed6adf92038c8d943b1960d087b58c00b3924d19f61a1d774b7610fc",
    "libimage-exiftool-perl_13.25+dfsg.orig.tar.xz": "78061843d488036841728d9cb9854454cf51d60d2ab510f1fd15d4921009910f",
}
#: Raw files in ``Image-ExifTool-<version>/t/images`` -> SHA-256.
RAW_SAMPLE_FILES = {
    "CanonRaw.cr3": "dc02aa55e277935b690879584e97c2d013f54d854afaec6f9d3274c99a918fd6",
    "FujiFilm.raf": "e12e30bd0cf5f160b82b93f043696c04d1d5f4628f1fdd19abdab9f8328d8bf0",
}

OFFLINE_VARIABLE = "AGETRACE_OFFLINE"
CACHE_VARIABLE = "AGETRACE_TEST_DATA"


class FetchError(RuntimeError):
    """The camera files could not be downloaded or did not match their pinned hashes."""


class OfflineError(FetchError):
    """The files are not cached and AGETRACE_OFFLINE=1 forbids downloading them."""


class NoAptError(FetchError):
    """The raw samples are not cached and this system has no apt-get to fetch them with."""


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
    _check_pinned(target, CAMERA_FILES, remove=cache)
    return target


def _check_pinned(target: Path, pinned: dict, *, remove: Path) -> None:
    """Raise :class:`FetchError` unless every pinned file in ``target`` has its SHA-256."""
    for name, digest in pinned.items():
        actual = sha256_of(target / name)
        if actual != digest:
            raise FetchError(f"{target / name} has SHA-256 {actual}, expected {digest}: "
                             f"delete {remove} and run the tests again")


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


def fetch_raw_samples(cache: Path | None = None) -> Path:
    """Return a folder holding :data:`RAW_SAMPLE_FILES`, each verified against its SHA-256.

    Downloads Debian's source package of ExifTool if needed and extracts the two raw files.

    Raises
    ------
    OfflineError
        If the files are not cached and ``AGETRACE_OFFLINE=1``.
    NoAptError
        If the files are not cached and ``apt-get`` is not available.
    FetchError
        If apt-get fails or a hash does not match.
    """
    cache = cache or cache_dir()
    target = cache / "exiftool-test-images"
    if not all(_matches(target / name, digest) for name, digest in RAW_SAMPLE_FILES.items()):
        archive = _exiftool_archive(cache)
        _extract_from_tarball(archive, target)
    _check_pinned(target, RAW_SAMPLE_FILES, remove=target)
    return target


def _exiftool_archive(cache: Path) -> Path:
    for filename, digest in EXIFTOOL_ORIG_TARBALLS.items():
        if _matches(cache / filename, digest):
            return cache / filename
    if os.environ.get(OFFLINE_VARIABLE) == "1":
        raise OfflineError(f"ExifTool's raw test images are not cached in {cache} and {OFFLINE_VARIABLE}=1; "
                           f"run `python tests/fetch_camera_files.py` once with network access")
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise NoAptError(f"ExifTool's raw test images are not cached in {cache}, and they are fetched with "
                         "apt-get (Debian's source package), which this system does not have")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        work = Path(work)
        options = _private_apt_options(work)
        _run_apt([apt_get, *options, "update"], work)  # a third-party source without deb-src may fail: judged below
        download = work / "download"
        download.mkdir()
        result = _run_apt([apt_get, *options, "source", "--download-only", EXIFTOOL_SOURCE_PACKAGE], download)
        # the upstream tarball is what is needed, even when apt-get failed on the .dsc or the Debian diff
        for filename, digest in EXIFTOOL_ORIG_TARBALLS.items():
            candidate = download / filename
            if candidate.is_file():
                actual = sha256_of(candidate)
                if actual != digest:
                    raise FetchError(f"{filename} has SHA-256 {actual}, expected {digest}: "
                                     "the package index served a different file; do not trust it")
                os.replace(candidate, cache / filename)
                return cache / filename
        got = sorted(path.name for path in download.iterdir())
        raise FetchError(f"`apt-get source {EXIFTOOL_SOURCE_PACKAGE}` gave {got or 'nothing'} (exit "
                         f"{result.returncode}), none of the pinned tarballs {sorted(EXIFTOOL_ORIG_TARBALLS)}:\n"
                         f"{result.stderr.strip()[-2000:]}\nAdd the new release's tarball and hash to "
                         f"EXIFTOOL_ORIG_TARBALLS if its t/images files still match, or set {OFFLINE_VARIABLE}=1.")


def _private_apt_options(work: Path) -> list[str]:
    """apt options that read the system's sources as deb-src and keep every state file in `work`."""
    parts = work / "sources.list.d"
    for folder in (parts, work / "lists" / "partial", work / "cache" / "archives" / "partial"):
        folder.mkdir(parents=True)
    system = Path("/etc/apt")
    listed = [system / "sources.list", *sorted((system / "sources.list.d").glob("*.list"))]
    for index, source in enumerate(path for path in listed if path.is_file()):
        lines = source.read_text(errors="replace").splitlines()
        (parts / f"{index:03d}.list").write_text(
            "".join(re.sub(r"^(\s*)deb(\s)", r"\1deb-src\2", line) + "\n" for line in lines))
    for index, source in enumerate(sorted((system / "sources.list.d").glob("*.sources"))):
        text = source.read_text(errors="replace")
        (parts / f"{index:03d}.sources").write_text(
            re.sub(r"(?im)^(types:)\s*deb\s*$", r"\1 deb-src", text))
    (work / "sources.list").write_text("")
    return ["-q", "-o", f"Dir::Etc::SourceList={work / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={parts}",
            "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
            *(["-o", "APT::Sandbox::User=root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])]


def _run_apt(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"`{' '.join(command)}` failed to run: {exc}") from exc


def _extract_from_tarball(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as bundle:
        for member in bundle:
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) == 4 and parts[1:3] == ["t", "images"]
                    and parts[3] in RAW_SAMPLE_FILES):
                continue
            with bundle.extractfile(member) as source, \
                    tempfile.NamedTemporaryFile(dir=target, delete=False) as sink:
                shutil.copyfileobj(source, sink)
            os.chmod(sink.name, 0o644)
            os.replace(sink.name, target / parts[3])


if __name__ == "__main__":
    print(fetch_camera_files())
    try:
        print(fetch_raw_samples())
    except FetchError as exc:
        sys.exit(f"ExifTool's raw samples were not fetched: {exc}")
