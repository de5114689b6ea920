"""Logger names and the command lines' logging set-up.

Library modules log through ``get_logger(__name__)``, which names their logger
``agetrace.<module path below pipeline>`` (``pipeline.analysis.experiment`` logs as
``agetrace.analysis.experiment``), so that an application or a notebook controls everything this
package says through the one ``agetrace`` logger. The library never configures logging itself and
never prints; only the command lines call :func:`configure_cli_logging`.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["ROOT_LOGGER", "get_logger", "configure_cli_logging"]

#: the parent of every logger of this package
ROOT_LOGGER = "agetrace"


def get_logger(module: str) -> logging.Logger:
    """The logger of a module of this package.

    Parameters
    ----------
    module : str
        The module's ``__name__``, e.g. ``"pipeline.analysis.experiment"``.

    Returns
    -------
    logging.Logger
        ``agetrace.analysis.experiment`` for that example; ``agetrace.<module>`` for a module
        outside ``pipeline`` (``baselines.defects`` -> ``agetrace.baselines.defects``).

    Examples
    --------
    >>> get_logger("pipeline.analysis.experiment").name
    'agetrace.analysis.experiment'
    >>> get_logger("baselines.defects").name
    'agetrace.baselines.defects'
    """
    head, _, tail = module.partition(".")
    if head == "pipeline":
        return logging.getLogger(f"{ROOT_LOGGER}.{tail}" if tail else ROOT_LOGGER)
    return logging.getLogger(f"{ROOT_LOGGER}.{module}")


class _CliFormatter(logging.Formatter):
    """Messages as they are at INFO; ``warning: ...`` / ``error: ...`` above it; module names at DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        if record.levelno < logging.INFO:
            return f"debug [{record.name}]: {message}"
        return message


def configure_cli_logging(verbosity: int = 0, stream=None) -> logging.Logger:
    """Route the ``agetrace`` logger to a stream for a command line run.

    Parameters
    ----------
    verbosity : int
        ``-1`` (``-q``): warnings and errors only; ``0``: progress messages (INFO); ``1`` or more
        (``-v``): also DEBUG.
    stream : file-like, optional
        Where messages go; standard error by default, so that standard output holds only the
        command's results (tables, JSON).

    Returns
    -------
    logging.Logger
        The configured ``agetrace`` logger. Calling this again replaces its handler, so a command
        run twice in one process (tests, notebooks) does not print everything twice.
    """
    root = logging.getLogger(ROOT_LOGGER)
    for handler in list(root.handlers):
        if getattr(handler, "_agetrace_cli", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler._agetrace_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_CliFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    return root
