"""Read a manifest's CSV text into records, locating every CSV-level problem by its physical line.

:func:`decode_manifest_text` turns the file's bytes into text (UTF-8, with or without a byte-order
mark) and :func:`read_records` splits it into records with the line numbers a user sees in an
editor, counting blank lines and line breaks inside quoted fields. A quote that is opened and never
closed is traced back to the line where it opens, with an excerpt. Checking the columns and values
of the records is :mod:`pipeline.data.manifest`'s job.
"""

from __future__ import annotations

import codecs
import csv
import re
from pathlib import Path

from pipeline.data.errors import ManifestError, ManifestProblem

__all__ = ["decode_manifest_text", "read_records"]


def decode_manifest_text(data: bytes, source: Path) -> str:
    """The manifest's text (a UTF-8 byte-order mark dropped).

    Raises
    ------
    ManifestError
        Naming the byte offset and line, if `data` is not UTF-8.
    """
    bom = codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b""
    try:
        return data[len(bom):].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = len(bom) + exc.start
        before = data[:offset]
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
        line_start = max(before.rfind(b"\n"), before.rfind(b"\r")) + 1
        after = before[line_start:].decode("utf-8", "replace")[-30:]
        bad = data[offset:len(bom) + exc.end]
        utf16 = (" (the file looks like UTF-16)" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
                 else "")
        message = (f"not UTF-8 text{utf16}: byte offset {offset} (line {line}) holds {bad!r}"
                   + (f", after {after!r}" if after else "")
                   + f" ({exc.reason}); re-save the manifest as UTF-8 (in Excel: Save As, file type "
                     "'CSV UTF-8 (Comma delimited)'; in a text editor: encoding UTF-8)")
        raise ManifestError([ManifestProblem(line, message, str(source))], source) from None


_QUOTE_AT_FIELD_START = {delimiter: re.compile(f'(?<=[{re.escape(delimiter)}\\r\\n])"|^"')
                         for delimiter in (",", ";", "\t")}


def _unclosed_quote(text: str, delimiter: str) -> int | None:
    """Offset of the quote that opens a field and is never closed in `text`, or None.

    Follows the csv module's reading: a quote opens a field only at the field's start, and
    inside a quoted field a doubled quote stands for one quote.
    """
    position = 0
    while match := _QUOTE_AT_FIELD_START[delimiter].search(text, position):
        opened, position = match.start(), match.start() + 1
        while True:
            position = text.find('"', position)
            if position < 0:
                return opened
            if text.startswith('"', position + 1):
                position += 2
                continue
            position += 1
            break
    return None


def _excerpt(line: str, column: int = 0, limit: int = 80) -> str:
    """At most `limit` characters of one physical line, around `column`, without its line break."""
    text = line.rstrip("\r\n")
    first = max(0, min(column - 20, len(text) - limit))
    shown = text[first:first + limit]
    return ("…" if first else "") + shown + ("…" if first + limit < len(text) else "")


def _quote_problem(lines: list[str], start: int, delimiter: str, what: str) -> ManifestProblem | None:
    """The problem of a quoted field opened in the record starting on line `start` and not closed."""
    opened = _unclosed_quote("".join(lines[start - 1:]), delimiter)
    if opened is None:
        return None
    line = start
    while opened >= len(lines[line - 1]):
        opened -= len(lines[line - 1])
        line += 1
    return ManifestProblem(line, f"a quoted field opens here and {what}; close the quote or remove it. "
                                 f"The line reads: {_excerpt(lines[line - 1], opened)!r}")


def read_records(lines: list[str], delimiter: str) -> tuple[list[tuple[int, int, list[str]]],
                                                             ManifestProblem | None]:
    """Every non-blank CSV record as (first line, last line, fields), and the CSV problem that
    stopped the reading (None if none). Lines are physical lines (header = 1), counting blank
    lines and line breaks inside quoted fields."""
    reader = csv.reader(iter(lines), delimiter=delimiter)
    records, previous_end = [], 0
    while True:
        start = previous_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problem = _quote_problem(lines, start, delimiter, f"runs on past line {reader.line_num}, where the CSV "
                                                              f"reader gives up ({exc})")
            if problem is None:
                problem = ManifestProblem(reader.line_num, f"malformed CSV ({exc}); fix this line. It reads: "
                                                           f"{_excerpt(lines[reader.line_num - 1])!r}")
            return records, ManifestProblem(problem.line, problem.message + "; the rows after it were not checked")
        previous_end = reader.line_num
        if fields:
            records.append((start, previous_end, fields))
    if records:  # a quote left open swallows the rest of the file into the last record
        start, end, _ = records[-1]
        problem = _quote_problem(lines, start, delimiter, f"is never closed (the rest of the file, to line {end}, "
                                                          "was read as its value)")
        if problem is not None:
            records.pop()
            return records, problem
    return records, None
