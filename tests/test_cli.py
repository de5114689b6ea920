"""The command lines' shared skeleton (``pipeline.cli``): help, -q/-v, subcommands, errors, the old name.

Fast: nothing here runs an experiment; the error paths stop before any image is read.
"""

from __future__ import annotations

import argparse
import importlib
import logging

import pytest

from pipeline import cli, sim
from pipeline.logs import get_logger

#: every entry point, with a default its --help must show (None: it has no option with a default)
ENTRY_POINTS = {
    "pipeline.ml_age": "(default: fg,nb,svm)",
    "pipeline.cross_device": "(default: agetrace-out/cross_device)",
    "pipeline.audit": "(default: 0.05)",
    "pipeline.saliency": "(default: cam,gradcam,gradcam++)",
    "pipeline.date": "(default: 0.95)",
    "pipeline.simulate": None,
    "pipeline.manifest": None,
    "pipeline.audit_scenarios": "(default: 1024x768)",
}


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    """No line wrapping in --help, so that a default is never split over two lines."""
    monkeypatch.setenv("COLUMNS", "250")


def _help(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_has_help_with_defaults_and_quiet_verbose(name, capsys):
    module = importlib.import_module(name)
    text = _help(module.main, ["--help"], capsys)
    assert f"usage: python -m {name}" in text
    assert "-q, --quiet" in text and "-v, --verbose" in text
    if ENTRY_POINTS[name]:
        assert ENTRY_POINTS[name] in text
    assert "(default: None)" not in text and "(default: False)" not in text
    # no option says its default twice (by hand and by the formatter)
    formatter = module.build_parser()._get_formatter()
    for action in module.build_parser()._actions:
        assert formatter._get_help_string(action).count("(default") <= 1, action.option_strings


def test_ml_age_help_lists_the_explain_subcommand(capsys):
    from pipeline.ml_age import main

    text = _help(main, ["--help"], capsys)
    assert "explain" in text and "defect evidence behind one image" in text
    text = _help(main, ["explain", "--help"], capsys)
    assert "usage: python -m pipeline.ml_age explain" in text and "--split-run" in text and "(default: 0)" in text


def test_ml_age_runs_with_or_without_the_subcommand():
    from pipeline.ml_age import _explain, _run, build_parser

    args = build_parser().parse_args(["--methods", "fg", "--runs", "3"])
    assert args.command is None and args.work is _run and args.methods == ("fg",) and args.runs == 3
    assert args.quiet is False and args.verbose == 0
    args = build_parser().parse_args(["explain", "img.jpg", "--run", "out", "--split-run", "2"])
    assert args.command == "explain" and args.work is _explain and args.split_run == 2
    assert str(args.image) == "img.jpg" and str(args.run) == "out"
    # -q before the subcommand is kept, -v after it is read
    assert cli.verbosity(build_parser().parse_args(["-q", "explain", "i", "--run", "r"])) == -1
    assert cli.verbosity(build_parser().parse_args(["explain", "i", "--run", "r", "-vv"])) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-q", "-v"])


def test_comma_list_reads_names_and_rejects_unknown_ones():
    parse = cli.comma_list(("fg", "nb", "svm"), "method")
    assert parse(" FG,svm,,fg") == ("fg", "svm", "fg")
    assert cli.comma_list(("fg", "nb"), "method", unique=True)("fg,nb,fg") == ("fg", "nb")
    for bad, listed in (("fg,lime", "['lime']"), (",", "[]")):
        with pytest.raises(argparse.ArgumentTypeError, match=r"unknown method\(s\) " + listed.replace("[", r"\[")
                           .replace("]", r"\]") + "; choose from fg,nb,svm"):
            parse(bad)


def test_quiet_hides_progress_messages_but_not_errors(monkeypatch, capsys):
    from pipeline.ml_age import main

    def no_dataset(**_):
        raise ValueError("no synthetic dataset in this test")

    monkeypatch.setattr(sim, "default_dataset", no_dataset)
    assert main(["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "No --manifest: using the embedded synthetic aging camera" in err
    assert err.rstrip().endswith("error: no synthetic dataset in this test")
    assert main(["-q", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: no synthetic dataset in this test\n" and captured.out == ""


def test_run_command_configures_logging_and_reports_expected_errors(capsys):
    logger = get_logger("pipeline.some_tool")

    def work(args):
        logger.info("progress")
        logger.debug("detail")
        raise FileNotFoundError("missing.csv: no such file")

    args = argparse.Namespace(quiet=False, verbose=1)
    assert cli.run_command(work, args, (FileNotFoundError,), status=5) == 5
    assert capsys.readouterr().err.splitlines() == ["progress", "debug [agetrace.some_tool]: detail",
                                                    "error: missing.csv: no such file"]
    with pytest.raises(KeyError):  # an error the tool does not expect is a bug: it keeps its traceback
        cli.run_command(lambda a: {}["x"], args, (FileNotFoundError,))
    # and the logging set-up is as before the command
    assert not logging.getLogger("agetrace").handlers and logging.getLogger("agetrace").level == logging.NOTSET


@pytest.mark.parametrize("name", ["pipeline.ml_age", "pipeline.cross_device", "pipeline.audit"])
def test_a_missing_manifest_is_one_error_naming_it(name, tmp_path, capsys):
    main = importlib.import_module(name).main
    missing = tmp_path / "nope.csv"
    assert main(["--manifest", str(missing), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and str(missing) in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_the_old_saliency_name_warns_and_still_works(capsys):
    from pipeline.explain import main

    with pytest.warns(DeprecationWarning, match="pipeline.explain is now pipeline.saliency"):
        text = _help(main, ["--help"], capsys)
    assert "usage: python -m pipeline.saliency" in text
    with pytest.warns(DeprecationWarning):
        with pytest.raises(SystemExit):
            main(["--help"])
    assert capsys.readouterr().err == ("pipeline.explain is now pipeline.saliency; the old name will be removed in "
                                       "the next release\n")
