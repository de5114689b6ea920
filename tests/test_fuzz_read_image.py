"""Fuzz :func:`pipeline.data.imageio.read_image` with Pillow's own test images (slow).

Every file of Pillow's ``Tests/images`` (:mod:`fetch_pillow_images`, pinned by SHA-256) is read
in a fresh Python process of its own, under a wall-clock timeout and an address-space limit
(``RLIMIT_AS``), at most two at a time. Each read ends in one of:

``ok``
    read as a :class:`~pipeline.data.imageio.SensorImage`;
``clear error``
    an :class:`~pipeline.data.errors.ImageReadError` whose message names the file and gives a
    reason;
``unclear error``
    any other exception (``MemoryError`` under the limit included), or an ``ImageReadError``
    whose message lacks the file name or a reason;
``hang``
    still running at the timeout;
``crash``
    killed by a signal, or a non-zero exit without a Python traceback.

Besides, a read is ``noisy`` when it wrote to stderr (decoder chatter from C libraries, a
Python warning or log line) without naming the file. The test asserts no unclear error, hang,
crash or noisy read. Run this file as a script for the table alone::

    .venv/bin/python tests/test_fuzz_read_image.py [--jobs 2] [--timeout 30] [--memory-mb 2048] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from fetch_camera_files import FetchError, OfflineError
from fetch_pillow_images import fetch_pillow_images, image_files

REPOSITORY = Path(__file__).resolve().parents[1]
OUTCOMES = ("ok", "clear error", "unclear error", "hang", "crash")
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_MB = 2048
_RESULT_MARK = "@@fuzz-result@@ "

# Runs in the child: limit memory, read one file, report on stdout after a marker line.
# Python warnings are shown on stderr (as a user would see them) and logging goes to stderr,
# so that everything a read prints can be checked for the file name.
_WORKER = r"""
import json, logging, resource, sys, warnings
path, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
warnings.simplefilter("always")
warnings.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\n"
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import read_image
try:
    image = read_image(path)
    result = {"outcome": "ok", "detail": repr(image), "notes": list(image.notes)}
except ImageReadError as exc:
    named = str(exc).startswith(f"cannot read image '{path}': ") and bool(exc.reason.strip())
    result = {"outcome": "clear error" if named else "unclear error", "detail": str(exc)}
except Exception as exc:
    result = {"outcome": "unclear error", "detail": f"{type(exc).__name__}: {exc}"}
sys.stderr.flush()
print("\n" + MARK + json.dumps(result), flush=True)
""".replace("MARK", repr(_RESULT_MARK))


@dataclass(frozen=True)
class Read:
    """The outcome of reading one file in its own process."""

    path: Path
    outcome: str
    detail: str
    stray_stderr: str  # stderr lines that do not name the file
    notes: tuple[str, ...] = ()  # SensorImage.notes of a read that succeeded

    @property
    def noisy(self) -> bool:
        return bool(self.stray_stderr)


def read_in_subprocess(path: Path, timeout_s: float = DEFAULT_TIMEOUT_S,
                       memory_mb: int = DEFAULT_MEMORY_MB) -> Read:
    """Read `path` with ``read_image`` in a fresh interpreter and classify what happened."""
    command = [sys.executable, "-c", _WORKER, str(path), str(memory_mb << 20)]
    environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Read(path, "hang", f"still running after {timeout_s:g} s", "")
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    stray = "\n".join(line for line in stderr.splitlines() if line.strip() and str(path) not in line)
    if done.returncode < 0:
        return Read(path, "crash", f"killed by signal {-done.returncode}: {stderr.strip()[-500:]}", stray)
    marked = [line for line in stdout.splitlines() if line.startswith(_RESULT_MARK)]
    if done.returncode == 0 and marked:
        result = json.loads(marked[-1][len(_RESULT_MARK):])
        return Read(path, result["outcome"], result["detail"], stray, tuple(result.get("notes", ())))
    if "Traceback (most recent call last)" in stderr:
        return Read(path, "unclear error", f"uncaught: {stderr.strip()[-800:]}", "")
    return Read(path, "crash", f"exit status {done.returncode}: {stderr.strip()[-500:]}", stray)


def fuzz(files: list[Path], *, jobs: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
         memory_mb: int = DEFAULT_MEMORY_MB) -> list[Read]:
    """Read every file in its own process, `jobs` (at most 2) at a time."""
    jobs = max(1, min(jobs, 2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda path: read_in_subprocess(path, timeout_s, memory_mb), files))


def table(reads: list[Read]) -> str:
    """The count of each outcome (and of noisy reads) as a small text table."""
    counts = Counter(read.outcome for read in reads)
    rows = [(outcome, counts[outcome]) for outcome in OUTCOMES]
    rows.insert(1, ("  ok, with notes (multi-frame, decoder messages)", sum(bool(read.notes) for read in reads)))
    rows += [("noisy (stderr without the file name)", sum(read.noisy for read in reads)), ("files", len(reads))]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {count:>5}" for name, count in rows)


def report(reads: list[Read], folder: Path, *, verbose: bool = False) -> str:
    """The table, then one line per failed read (and per clear error if `verbose`)."""
    lines = [table(reads)]
    for read in reads:
        name = read.path.relative_to(folder).as_posix()
        if read.outcome in ("unclear error", "hang", "crash") or (verbose and read.outcome == "clear error"):
            lines.append(f"{read.outcome:>13}  {name}: {read.detail}")
        if verbose and read.notes:
            lines.append(f"{'ok, noted':>13}  {name}: {' | '.join(read.notes)}")
        if read.noisy:
            lines.append(f"{'noisy':>13}  {name}: {read.stray_stderr[:400]!r}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def pillow_images() -> Path:
    try:
        return fetch_pillow_images()
    except OfflineError as exc:
        pytest.skip(str(exc))
    except FetchError as exc:
        pytest.fail(f"Pillow's test images unavailable: {exc}", pytrace=False)


@pytest.mark.slow
def test_read_image_on_pillow_test_images(pillow_images):
    reads = fuzz(image_files(pillow_images))
    text = report(reads, pillow_images)
    print(text)
    counts = Counter(read.outcome for read in reads)
    assert len(reads) > 1000 and counts["ok"] > 50 and counts["clear error"] > 500, text
    assert (counts["unclear error"], counts["hang"], counts["crash"]) == (0, 0, 0), text
    assert not any(read.noisy for read in reads), text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (at most 2)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per file")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="address-space limit per file")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list every clear error and note")
    parser.add_argument("files", nargs="*", type=Path, help="files to read instead of Pillow's test images")
    arguments = parser.parse_args(argv)
    files = [path.resolve() for path in arguments.files]
    folder = Path(os.path.commonpath([path.parent for path in files])) if files else fetch_pillow_images()
    files = files or image_files(folder)
    reads = fuzz(files, jobs=arguments.jobs, timeout_s=arguments.timeout, memory_mb=arguments.memory_mb)
    print(report(reads, folder, verbose=arguments.verbose))
    bad = sum(read.outcome in ("unclear error", "hang", "crash") or read.noisy for read in reads)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
