"""Fuzz :func:`pipeline.data.imageio.read_image` with Pillow's own test images (slow).

Every file of Pillow's ``Tests/images`` (:mod:`fetch_pillow_images`, pinned by SHA-256) is read
in a process of its own (forked from the test's, so it shares its imports), under a wall-clock
timeout and an address-space limit (``RLIMIT_AS``: what the process already maps plus 2 GiB),
at most two at a time. Each read ends in one of:

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
import os
import sys
from collections import Counter
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


def _address_space() -> int:
    """Bytes of virtual memory this process already maps (VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _read_in_child(path: str, memory: int, output: str, connection) -> None:
    """Runs in the forked child: stdout and stderr to `output`, memory limited, one read."""
    import faulthandler
    import logging
    import resource
    import warnings

    from pipeline.data.errors import ImageReadError
    from pipeline.data.imageio import read_image

    faulthandler.disable()  # pytest's would print a crash on the terminal; the exit signal tells it here
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    # and Python's streams onto them (under pytest they are capture objects, not the descriptors)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    # what the parent (pytest) set up for warnings and logging is replaced by what a user sees:
    # every warning and every log record of WARNING and above, printed on stderr
    warnings.resetwarnings()
    warnings.simplefilter("always")
    warnings.showwarning = lambda message, category, *args, **kwargs: sys.stderr.write(
        f"{category.__name__}: {message}\n")
    root = logging.getLogger()
    root.handlers[:] = [logging.StreamHandler(sys.stderr)]
    root.handlers[0].setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.setLevel(logging.WARNING)
    limit = _address_space() + memory  # the parent's mappings (numpy, maybe torch) plus the budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        image = read_image(path)
        result = {"outcome": "ok", "detail": repr(image), "notes": list(image.notes)}
    except ImageReadError as exc:
        named = str(exc).startswith(f"cannot read image '{path}': ") and bool(exc.reason.strip())
        result = {"outcome": "clear error" if named else "unclear error", "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - every other exception is what the fuzz looks for
        result = {"outcome": "unclear error", "detail": f"{type(exc).__name__}: {exc}"}
    sys.stdout.flush()
    sys.stderr.flush()
    connection.send(result)
    os._exit(0)


def _outcome(path: Path, process, receiver, output: Path, timed_out: bool, timeout_s: float) -> Read:
    stderr = output.read_text("utf-8", "replace") if output.exists() else ""
    stray = "\n".join(line for line in stderr.splitlines() if line.strip() and str(path) not in line)
    if timed_out:
        return Read(path, "hang", f"still running after {timeout_s:g} s", "")
    if process.exitcode is not None and process.exitcode < 0:
        return Read(path, "crash", f"killed by signal {-process.exitcode}: {stderr.strip()[-500:]}", stray)
    if receiver.poll():
        result = receiver.recv()
        return Read(path, result["outcome"], result["detail"], stray, tuple(result.get("notes", ())))
    if "Traceback (most recent call last)" in stderr:
        return Read(path, "unclear error", f"uncaught: {stderr.strip()[-800:]}", "")
    return Read(path, "crash", f"exit status {process.exitcode}: {stderr.strip()[-500:]}", stray)


def fuzz(files: list[Path], *, jobs: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
         memory_mb: int = DEFAULT_MEMORY_MB) -> list[Read]:
    """Read every file in a process of its own, forked from this one (whose imports it shares,
    so a read costs the read and not an interpreter's start), `jobs` (at most 2) at a time."""
    import multiprocessing
    import tempfile
    import time

    import pipeline.data.imageio  # noqa: F401 - imported once here, shared by every forked reader

    context = multiprocessing.get_context("fork")
    jobs = max(1, min(jobs, 2, os.cpu_count() or 1))
    results: dict[int, Read] = {}
    running = {}  # index -> (process, receiver, output file, start)
    queue = list(enumerate(files))
    with tempfile.TemporaryDirectory(prefix="fuzz-read-") as scratch:
        while queue or running:
            while queue and len(running) < jobs:
                index, path = queue.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                output = Path(scratch) / f"{index}.txt"
                process = context.Process(target=_read_in_child, args=(str(path), memory_mb << 20, str(output),
                                                                        sender), daemon=True)
                process.start()
                sender.close()
                running[index] = (process, receiver, output, time.monotonic())
            time.sleep(0.002)
            for index, (process, receiver, output, start) in list(running.items()):
                timed_out = process.is_alive() and time.monotonic() - start > timeout_s
                if process.is_alive() and not timed_out:
                    continue
                if timed_out:
                    process.kill()
                process.join()
                results[index] = _outcome(files[index], process, receiver, output, timed_out, timeout_s)
                receiver.close()
                del running[index]
    return [results[index] for index in range(len(files))]


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


def test_the_harness_tells_every_outcome_apart(tmp_path, monkeypatch):
    """The fuzz's classification, on planted behaviours of the reader (inherited by the forks)."""
    import signal
    import time

    import pipeline.data.imageio as imageio
    from pipeline.data.errors import ImageReadError

    def planted(path, *args, **kwargs):
        name = Path(path).stem
        if name == "hang":
            time.sleep(60)
        if name == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if name == "unclear":
            raise KeyError("no file name here")
        if name == "vague":
            raise ImageReadError("elsewhere.jpg", "bad")
        if name == "chatty":
            print("libfoo: warning without a name", file=sys.stderr)
        raise ImageReadError(path, "planted clear error")

    monkeypatch.setattr(imageio, "read_image", planted)
    files = [tmp_path / f"{name}.jpg" for name in ("hang", "crash", "unclear", "vague", "chatty", "clear")]
    reads = {read.path.stem: read for read in fuzz(files, timeout_s=3)}
    assert {name: read.outcome for name, read in reads.items()} == {
        "hang": "hang", "crash": "crash", "unclear": "unclear error", "vague": "unclear error",
        "chatty": "clear error", "clear": "clear error"}
    assert [name for name, read in reads.items() if read.noisy] == ["chatty"]


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
