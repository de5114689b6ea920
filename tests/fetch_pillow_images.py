"""Fetch Pillow's own test images (``Tests/images`` of its sdist) for the reader fuzz test.

About a thousand files nobody in this project made: every format and layout Pillow supports,
including broken, truncated, oversized and hostile ones collected from Pillow's bug reports.
:mod:`test_fuzz_read_image` runs :func:`pipeline.data.imageio.read_image` over each of them.

The sdist is downloaded once from PyPI's file host into the cache folder shared with
:mod:`fetch_camera_files` (``$AGETRACE_TEST_DATA``, default ``~/.cache/agetrace-test-data``)
and checked against :data:`SDIST_SHA256`; the extracted folder is checked on each use against
:data:`TREE_SHA256`, one digest over every extracted file's name and SHA-256. Run this module
as a script to fill the cache ahead of an offline run (``AGETRACE_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from fetch_camera_files import OFFLINE_VARIABLE, FetchError, OfflineError, cache_dir, sha256_of

__all__ = ["SDIST_SHA256", "SDIST_URL", "TREE_SHA256", "fetch_pillow_images", "image_files"]

SDIST_VERSION = "13.0.0"
SDIST_FILENAME = f"pillow-{SDIST_VERSION}.tar.gz"
#: From https://pypi.org/simple/pillow/ (the sdist of Pillow 13.0.0, 47,058,631 bytes).
SDIST_URL = ("https://files.pythonhosted.org/packages/ce/a4/"
             "9cc30690a394a8305e8be4c9036aa16d0dfddadd09079860b582f562496d/" + SDIST_FILENAME)
SDIST_SHA256 = "cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510"
MEMBER_FOLDER = f"pillow-{SDIST_VERSION}/Tests/images/"
#: SHA-256 of the lines "<relative path> <file SHA-256>\n" of every extracted file, sorted by path.
TREE_SHA256 = "5e19b462c92eb34e3a00d032b47cd0794871bc0ee6e873acbfcb8342bc9fd632"


def fetch_pillow_images(cache: Path | None = None) -> Path:
    """Return a folder holding Pillow's ``Tests/images``, verified against :data:`TREE_SHA256`.

    Downloads and extracts Pillow's sdist if needed.

    Raises
    ------
    OfflineError
        If the images are not cached and ``AGETRACE_OFFLINE=1``.
    FetchError
        If the download fails or a hash does not match.
    """
    cache = cache or cache_dir()
    target = cache / f"pillow-{SDIST_VERSION}-test-images"
    if not (target.is_dir() and tree_digest(target) == TREE_SHA256):
        _extract(_archive(cache), target)
        actual = tree_digest(target)
        if actual != TREE_SHA256:
            raise FetchError(f"the images extracted into {target} have tree digest {actual}, expected "
                             f"{TREE_SHA256}: delete {target} and run the tests again")
    return target


def image_files(folder: Path) -> list[Path]:
    """Every regular file under `folder`, sorted by relative path."""
    return sorted((path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()),
                  key=lambda path: path.relative_to(folder).as_posix())


def tree_digest(folder: Path) -> str:
    """SHA-256 over the sorted "<relative path> <SHA-256>" lines of the files under `folder`."""
    digest = hashlib.sha256()
    for path in image_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()} {sha256_of(path)}\n".encode())
    return digest.hexdigest()


def _archive(cache: Path) -> Path:
    archive = cache / SDIST_FILENAME
    if archive.is_file() and sha256_of(archive) == SDIST_SHA256:
        return archive
    if os.environ.get(OFFLINE_VARIABLE) == "1":
        raise OfflineError(f"Pillow's test images are not cached in {cache} and {OFFLINE_VARIABLE}=1; "
                           "run `python tests/fetch_pillow_images.py` once with network access")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, prefix=f".{SDIST_FILENAME}.", suffix=".tmp",
                                     delete=False) as sink:
        try:
            with urllib.request.urlopen(SDIST_URL, timeout=300) as response:
                shutil.copyfileobj(response, sink, 1 << 20)
        except OSError as exc:
            sink.close()
            os.unlink(sink.name)
            raise FetchError(f"could not download {SDIST_URL}: {exc}\n"
                             f"Set {OFFLINE_VARIABLE}=1 to skip these tests without network access.") from exc
    actual = sha256_of(Path(sink.name))
    if actual != SDIST_SHA256:
        os.unlink(sink.name)
        raise FetchError(f"{SDIST_FILENAME} has SHA-256 {actual}, expected {SDIST_SHA256}: "
                         "the index served a different file; do not trust it")
    os.replace(sink.name, archive)
    return archive


def _extract(archive: Path, target: Path) -> None:
    """Extract the images into a fresh folder, then swap it in for `target`."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with tarfile.open(archive) as bundle:
            for member in bundle:
                if not (member.isfile() and member.name.startswith(MEMBER_FOLDER)):
                    continue
                relative = member.name[len(MEMBER_FOLDER):]
                destination = staging / relative
                if ".." in Path(relative).parts:
                    raise FetchError(f"{SDIST_FILENAME} holds an unsafe member name {member.name!r}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.extractfile(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


if __name__ == "__main__":
    folder = fetch_pillow_images()
    print(f"{folder} ({len(image_files(folder))} files)")
