"""The ``agetrace`` command: one subcommand per ``python -m pipeline.<tool>`` command line.

    agetrace <tool> [ARGS...]      runs   python -m pipeline.<tool> [ARGS...]
    agetrace --version             prints agetrace <version>
    agetrace --help                lists the tools, each with its one-line description

``python -m pipeline`` is the same command. The arguments after the tool's name go to that
tool's ``main(argv)`` unchanged, and its exit status is the command's, so ``agetrace ml_age
--help`` shows the options of ``python -m pipeline.ml_age``. A tool's module (and whatever it
imports: numba, scikit-learn, ...) is imported only when its subcommand runs; ``--help`` reads
the tools' descriptions from their source, so ``agetrace --version`` and ``agetrace --help`` are
fast and never load torch.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

from pipeline import __version__

__all__ = ["TOOLS", "build_parser", "describe", "main"]

#: the tools, as ``python -m pipeline.<tool>`` names them (``explain`` is the deprecated name of
#: ``saliency`` and has no subcommand)
TOOLS = ("ml_age", "date", "cross_device", "audit", "audit_scenarios", "saliency", "simulate", "manifest")

PROG = "agetrace"

EPILOG = """\
Each subcommand takes the options of its python -m pipeline.<tool> command, which
'agetrace <tool> --help' lists (its usage line names the python -m form). The exit
status is the tool's. The deprecated 'python -m pipeline.explain' is 'agetrace saliency'."""


def describe(tool: str) -> str:
    """The first line of a tool's module docstring, read from its source without importing it.

    Parameters
    ----------
    tool : str
        One of :data:`TOOLS`.

    Returns
    -------
    str
        E.g. ``"Generate the synthetic aging-camera dataset."``; empty when the module has no
        docstring.
    """
    source = Path(__file__).with_name(f"{tool}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: ``--version``, and the tool with the arguments it passes on."""
    width = max(len(tool) for tool in TOOLS)
    listing = "\n".join(f"  {tool:<{width}}  {describe(tool)}" for tool in TOOLS)
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f"{PROG} [-h] [--version] TOOL [ARGS ...]",
        description=f"Temporal image forensics from in-field sensor defects.\n\ntools:\n{listing}",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("tool", metavar="TOOL", choices=TOOLS, help="the tool to run (listed above)")
    parser.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER,
                        help="passed to the tool unchanged ('agetrace TOOL --help' lists them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``agetrace``; returns the tool's exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``agetrace`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        What the tool's ``main`` returned. ``--help``, ``--version``, and a missing or unknown
        tool exit through :class:`SystemExit` (status 0, 0 and 2), as the tools' own ``--help``
        does.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.error("name a TOOL ('agetrace --help' lists them)")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"pipeline.{args.tool}")
    return module.main(list(args.args))


if __name__ == "__main__":
    sys.exit(main())
