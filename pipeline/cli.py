"""What every command line of the package shares: its options, help layout, logging and errors.

An entry point (``pipeline/<tool>.py``) builds its parser with :func:`new_parser` (which adds
``-q/--quiet`` and ``-v/--verbose``), adds the option groups it has (:func:`add_dataset_options`,
:func:`add_split_options`, :func:`add_run_options`) and its own options, and runs its work
through :func:`run_command`, which configures logging from ``-q/-v`` and turns the errors the
tool expects into one ``error: ...`` line on standard error and the tool's documented exit
status. Results (tables, JSON, "Wrote ...") go to standard output with ``print``; progress
messages go to the ``agetrace`` logger, which the command lines route to standard error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline import sim
from pipeline.logs import ROOT_LOGGER, configure_cli_logging, get_logger

__all__ = ["EXIT_ERROR", "HelpFormatter", "new_parser", "add_subcommand", "add_verbosity_options", "verbosity",
           "add_dataset_options", "add_split_options", "add_run_options", "comma_list", "default_manifest",
           "run_command"]

logger = get_logger(__name__)

#: the exit status of a command that stopped on an error (bad input, unwritable output, ...)
EXIT_ERROR = 2

MANIFEST_HELP = "CSV manifest of dated images (default: the synthetic dataset)"
CLASSES_HELP = ("class specification (shipped name such as ntif/plus, or a TOML path) deriving labels for rows "
                "without one")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Description and epilog as written; ``(default: X)`` after the help of each option that has one.

    Flags (``--strict``), options without a default (None) and options whose help already
    names its default (``%(default)s``) get no suffix; a list default is shown comma-separated,
    as it is typed.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or action.nargs == 0 or "%(default)" in text
                or default is None or default is argparse.SUPPRESS or default == []):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def new_parser(prog: str, description: str, epilog: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """An entry point's parser: :class:`HelpFormatter` and the ``-q/-v`` options.

    Parameters
    ----------
    prog : str
        The command as typed, e.g. ``"python -m pipeline.ml_age"``.
    description, epilog : str
        Shown before and after the options, line breaks kept.
    **kwargs
        Passed to :class:`argparse.ArgumentParser` (``usage``, ...).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=HelpFormatter, **kwargs)
    add_verbosity_options(parser)
    return parser


def add_verbosity_options(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """Add ``-q/--quiet`` and ``-v/--verbose`` (counted), read back by :func:`verbosity`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser, or a subcommand's parser.
    subcommand : bool
        True for a subcommand's parser: its options then have no default, so that ``-q`` given
        before the subcommand is not reset by the subcommand's parser.
    """
    group = parser.add_mutually_exclusive_group()
    quiet_default, verbose_default = (argparse.SUPPRESS, argparse.SUPPRESS) if subcommand else (False, 0)
    group.add_argument("-q", "--quiet", action="store_true", default=quiet_default,
                       help="print warnings and errors only, no progress messages")
    group.add_argument("-v", "--verbose", action="count", default=verbose_default,
                       help="also print debugging messages (naming the module that says them)")


def add_subcommand(subparsers, name: str, *, help: str, description: str,
                   epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand's parser (``python -m pipeline.ml_age explain``): :class:`HelpFormatter`, ``-q/-v``.

    Parameters
    ----------
    subparsers
        What :meth:`argparse.ArgumentParser.add_subparsers` returned.
    name : str
        The subcommand.
    help : str
        Its line in the parent command's ``--help``.
    description, epilog : str
        Shown before and after its options, line breaks kept.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=HelpFormatter)
    add_verbosity_options(parser, subcommand=True)
    return parser


def verbosity(args: argparse.Namespace) -> int:
    """``-1`` with ``-q``, the number of ``-v`` otherwise (the argument of ``configure_cli_logging``)."""
    return -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0)


def add_dataset_options(parser: argparse.ArgumentParser, *, manifest_help: str = MANIFEST_HELP):
    """Add ``--manifest`` and ``--classes`` (the images to work on).

    Returns
    -------
    argparse._ArgumentGroup
        The group, for the tool's own options about its input.
    """
    group = parser.add_argument_group("images")
    group.add_argument("--manifest", type=Path, help=manifest_help)
    group.add_argument("--classes", help=CLASSES_HELP)
    return group


def add_split_options(parser: argparse.ArgumentParser, *, runs: int | None = 10, test_size: float | None = 0.1,
                      seed: int | None = 0, runs_help: str = "repeated stratified splits, as the papers",
                      test_size_help: str = "test fraction per class", seed_help: str = "root seed of the splits"):
    """Add ``--runs``, ``--test-size`` and ``--seed`` (the repeated stratified splits).

    Parameters
    ----------
    runs, test_size, seed
        The defaults; None where the tool decides later (e.g. from a finished run), in which
        case the help should say what it does.
    runs_help, test_size_help, seed_help : str
        The options' help, without the default (added by :class:`HelpFormatter`).

    Returns
    -------
    argparse._ArgumentGroup
    """
    group = parser.add_argument_group("splits")
    group.add_argument("--runs", type=int, default=runs, help=runs_help)
    group.add_argument("--test-size", type=float, default=test_size, help=test_size_help)
    group.add_argument("--seed", type=int, default=seed, help=seed_help)
    return group


def add_run_options(parser: argparse.ArgumentParser, *, strict: bool = True,
                    strict_help: str = "stop at the first unreadable image",
                    progress_help: str = "hide progress bars"):
    """Add ``--strict`` (unless ``strict=False``) and ``--no-progress``.

    Returns
    -------
    argparse._ArgumentGroup
    """
    group = parser.add_argument_group("running")
    if strict:
        group.add_argument("--strict", action="store_true", help=strict_help)
    group.add_argument("--no-progress", action="store_true", help=progress_help)
    return group


def comma_list(choices: Iterable[str], noun: str, *, unique: bool = False) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type`` reading a comma-separated list of names from ``choices``.

    Parameters
    ----------
    choices : iterable of str
        The allowed names, lower case, in the order the error message lists them.
    noun : str
        What a name is (``"method"``), for the error message.
    unique : bool
        Drop repeated names (keeping the first).

    Returns
    -------
    callable
        ``str -> tuple of str``; names are stripped and lower-cased, empty items skipped. An
        empty list or an unknown name raises :class:`argparse.ArgumentTypeError`.

    Examples
    --------
    >>> comma_list(("fg", "nb", "svm"), "method")("FG, svm")
    ('fg', 'svm')
    """
    choices = tuple(choices)

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
        if unique:
            names = tuple(dict.fromkeys(names))
        bad = [name for name in names if name not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {noun}(s) {bad}; choose from {','.join(choices)}")
        return names

    parse.__name__ = f"{noun} list"  # argparse names the type in its "invalid ... value" message
    return parse


def default_manifest(*, progress: bool, action: str = "using") -> tuple[Path, dict]:
    """The embedded synthetic dataset's manifest, for a command given no ``--manifest``.

    Parameters
    ----------
    progress : bool
        Show a progress bar while the dataset is generated (the first time only; it is cached).
    action : str
        The verb of the message logged, e.g. ``"auditing"``.

    Returns
    -------
    path : Path
        The manifest.
    extra_record : dict
        ``{"synthetic": {"root": ..., "defects": ...}}``, for the run's ``config.json``.
    """
    logger.info(f"No --manifest: {action} the embedded synthetic aging camera (generated once, then cached).")
    dataset = sim.default_dataset(progress=progress)
    return Path(dataset.manifest_path), {"synthetic": {"root": str(dataset.root),
                                                       "defects": str(dataset.defects_path)}}


def run_command(work: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                errors: tuple[type[BaseException], ...], *, status: int = EXIT_ERROR, prefix: str = "error: ") -> int:
    """Run a command's work with logging configured and its expected errors reported.

    Parameters
    ----------
    work : callable
        ``work(args)`` does the work, prints the results and returns the exit status.
    args : argparse.Namespace
        The parsed arguments (with the ``-q/-v`` of :func:`add_verbosity_options`).
    errors : tuple of exception types
        The errors that are the user's to fix (bad input, unwritable output, ...): each is
        reported as one line, ``prefix`` + its message, on standard error; anything else is a
        bug and propagates with its traceback.
    status : int
        The exit status returned for those errors.
    prefix : str
        The start of the error line.

    Returns
    -------
    int
        The exit status.
    """
    with _cli_logging(verbosity(args)):
        try:
            return work(args)
        except errors as exc:
            print(f"{prefix}{exc}", file=sys.stderr)
            return status


@contextmanager
def _cli_logging(level: int) -> Iterator[None]:
    """``configure_cli_logging(level)`` for the duration of one command, then the logging set-up before it.

    A command run inside another (``saliency`` training SRNet through ``ml_age``) or called as a
    function (tests, notebooks) leaves no handler behind on a standard error that may be gone.
    """
    root = logging.getLogger(ROOT_LOGGER)
    level_before, handlers_before = root.level, list(root.handlers)
    configure_cli_logging(level)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers_before:
                root.removeHandler(handler)
        for handler in handlers_before:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level_before)
