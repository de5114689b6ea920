"""Exceptions for unreadable images and invalid manifests.

Every file that cannot be read as an image raises :class:`ImageReadError`, whatever the
cause (empty, truncated, text named ``.jpg``, unsupported format, decoder failure), so a
caller needs one ``except`` clause to report a bad file and go on with the others.
Manifest problems are collected, not raised one at a time: :class:`ManifestError` holds
all of them so that a user can fix a manifest in one pass.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["ImageReadError", "ManifestError", "ManifestProblem"]

DEFAULT_IMAGE_ADVICE = "Re-copy the file or exclude it from the manifest."


class ImageReadError(ValueError):
    """A file could not be read as an image in its sensor frame.

    Parameters
    ----------
    path : str or os.PathLike
        The file that could not be read.
    reason : str
        What is wrong with it, e.g. ``"truncated JPEG data (Premature end of JPEG file)"``.
    advice : str, optional
        What the user can do about it; a generic hint by default.

    Attributes
    ----------
    path : str
        The file, as given.
    reason : str
        What is wrong with it.
    advice : str
        What to do about it.

    Examples
    --------
    >>> str(ImageReadError("/x/y.jpg", "empty file (0 bytes)"))
    "cannot read image '/x/y.jpg': empty file (0 bytes). Re-copy the file or exclude it from the manifest."
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, advice: str = DEFAULT_IMAGE_ADVICE):
        self.path = os.fspath(path)
        self.reason = reason
        self.advice = advice
        super().__init__(self.path, reason, advice)

    def __str__(self) -> str:
        text = f"cannot read image '{self.path}': {self.reason}"
        if self.advice:
            text += f". {self.advice}"
        return text

    def __reduce__(self):
        # Keeps the exception picklable (worker processes send it back to the parent).
        return (type(self), (self.path, self.reason, self.advice))


@dataclass(frozen=True)
class ManifestProblem:
    """One problem found in a manifest or while building one.

    Parameters
    ----------
    line : int or None
        1-based line number in the manifest CSV (the header is line 1); None when the
        problem concerns no row (e.g. a missing column or a file that got no row).
    message : str
        What is wrong and, where possible, what to do.
    path : str or None
        The image file concerned, if any.
    column : str or None
        The manifest column concerned, if any.
    """

    line: int | None
    message: str
    path: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}" if self.line is not None else "manifest"]
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.path is not None:
            where.append(f"file '{_printable(self.path)}'")
        return f"{', '.join(where)}: {self.message}"


def _printable(text: str, limit: int = 200) -> str:
    """`text` on one line (control characters such as a NUL or a line break escaped), cut to `limit`."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class ManifestError(ValueError):
    """A manifest has one or more problems; its message lists all of them.

    Parameters
    ----------
    problems : sequence of ManifestProblem
        Every problem found (at least one).
    source : str or os.PathLike, optional
        The manifest file, named in the message.

    Attributes
    ----------
    problems : list of ManifestProblem
    source : str or None
    """

    def __init__(self, problems, source: str | os.PathLike[str] | None = None):
        self.problems = list(problems)
        if not self.problems:
            raise ValueError("ManifestError needs at least one ManifestProblem")
        self.source = None if source is None else os.fspath(source)
        super().__init__(self.problems, self.source)

    def __str__(self) -> str:
        name = f"manifest '{self.source}'" if self.source is not None else "manifest"
        count = len(self.problems)
        lines = [f"{name} has {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)

    def __reduce__(self):
        return (type(self), (self.problems, self.source))
