"""The package as a user installs it: the ``agetrace`` command, the version, the licence, the citation.

The console script is the one ``pip install -e .`` put beside this interpreter (the CI's fresh
virtual environment); the subprocesses run outside the source tree, so that they import the
installed package. Fast: nothing here reads an image.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

import pipeline
import pipeline.simulate
from pipeline import __main__ as console
from pipeline import ml_age

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
SCRIPT = Path(sys.executable).parent / ("agetrace.exe" if os.name == "nt" else "agetrace")


def _run(args: list, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.fixture
def script() -> Path:
    if not SCRIPT.exists():
        pytest.fail(f"no console script {SCRIPT}: reinstall the package into this environment "
                    f"({Path(sys.executable).parent / 'pip'} install -e '.[cnn,dask,dev]')", pytrace=False)
    return SCRIPT


# ------------------------------------------------------------------ the agetrace command
def test_agetrace_version_is_pyprojects(script, tmp_path):
    result = _run([script, "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"agetrace {VERSION}\n"


def test_agetrace_tool_help_is_the_python_m_help(script, tmp_path, monkeypatch, capsys):
    result = _run([script, "ml_age", "--help"], tmp_path, COLUMNS="250")
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exit_:
        ml_age.main(["--help"])
    assert exit_.value.code == 0
    assert result.stdout == capsys.readouterr().out
    assert "usage: python -m pipeline.ml_age" in result.stdout and "--methods" in result.stdout


def test_agetrace_returns_the_tools_exit_status(script, tmp_path):
    missing = tmp_path / "missing.csv"
    result = _run([script, "manifest", "check", missing], tmp_path)
    assert result.returncode == 1  # manifest check's "the manifest has problems", not argparse's 2
    assert "missing.csv" in result.stderr and "does not exist" in result.stderr


def test_arguments_reach_the_tool_unchanged(monkeypatch):
    seen = []
    monkeypatch.setattr(pipeline.simulate, "main", lambda argv: seen.append(argv) or 7)
    argv = ["--help", "--version", "-q", "--seed", "3", "--", "x y"]
    assert console.main(["simulate", *argv]) == 7
    assert seen == [argv]


def _tools_with_main() -> set[str]:
    """Top-level modules of pipeline/ with a module-level ``def main``, read from the source."""
    found = set()
    for path in (ROOT / "pipeline").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            found.add(path.stem)
    return found


def test_every_python_m_tool_is_a_subcommand():
    # explain is the deprecated name of saliency; __main__ is agetrace itself
    assert set(console.TOOLS) == _tools_with_main() - {"explain", "__main__"}


def test_help_lists_every_tool_with_its_description(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exit_:
        console.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for tool in console.TOOLS:
        first_line = importlib.import_module(f"pipeline.{tool}").__doc__.strip().splitlines()[0]
        assert re.search(rf"^  {tool} +{re.escape(first_line)}$", text, re.MULTILINE), (tool, first_line)


@pytest.mark.parametrize("argv, message", [([], "name a TOOL"), (["explain"], "invalid choice: 'explain'"),
                                           (["nope"], "invalid choice: 'nope'")])
def test_a_missing_or_unknown_tool_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        console.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_version_and_help_load_no_heavy_module(tmp_path):
    code = ("import sys\n"
            "from pipeline.__main__ import main\n"
            "for argv in (['--version'], ['--help']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('torch', 'numba', 'sklearn', 'matplotlib') if m in sys.modules))\n")
    result = _run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ version
def test_version_is_pyprojects():
    assert pipeline.__version__ == VERSION


def test_version_of_a_source_tree_that_is_not_installed(monkeypatch):
    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(pipeline, "version", not_installed)
    assert pipeline._version() == VERSION


# ------------------------------------------------------------------ baselines
def test_the_estimators_import_from_baselines_alone(tmp_path):
    code = ("import sys\n"
            "from baselines import FridrichGoljanClassifier, ResidualNaiveBayes, ResidualSVM, DefectIdentifier\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'pipeline'))\n")
    result = _run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_exported_estimator_has_a_doctest_example():
    import baselines
    for name in baselines.__all__:
        doc = getattr(baselines, name).__doc__
        if name == "DefectTable":  # the identifier's output, shown in its example
            continue
        assert "\n    Examples\n    --------\n" in doc and ">>> " in doc, name
    fg = baselines.FridrichGoljanClassifier.__doc__
    assert "enable_metadata_routing=True" in fg and "set_fit_request(sigma=True, exposure=True)" in fg


def test_pytest_runs_the_packages_doctests():
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert {"tests", "baselines", "kernels", "pipeline"} <= set(options["testpaths"])


# ------------------------------------------------------------------ licence and citation
def test_license_is_bsd_3_clause_as_pyproject_says():
    text = " ".join((ROOT / "LICENSE").read_text(encoding="utf-8").split())
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    assert "LICENSE" in PYPROJECT["project"]["license-files"]
    assert text.startswith("BSD 3-Clause License Copyright (c) 2026, the agetrace developers ")
    clauses = ["1. Redistributions of source code must retain the above copyright notice",
               "2. Redistributions in binary form must reproduce the above copyright notice",
               "3. Neither the name of the copyright holder nor the names of its contributors may be used "
               "to endorse or promote products derived from this software without specific prior written "
               "permission.",
               'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"',
               "EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE."]
    for clause in clauses:
        assert clause in text, clause
    assert "4." not in text  # not the four-clause (advertising) licence


def test_citation_cff_is_valid_and_names_the_papers():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"] and cff["title"] and cff["authors"]
    assert cff["version"] == VERSION and cff["license"] == PYPROJECT["project"]["license"]
    for person in cff["authors"]:
        assert person.get("family-names") or person.get("name"), person
    titles = {ref["title"].lower(): ref for ref in cff["references"]}
    for expected in ("determining approximate age of digital images using sensor defects",   # Fridrich & Goljan
                     "a machine learning approach to approximate the age of a digital image",  # NB/SVM
                     "identification of in-field sensor defects in the context of image age approximation",
                     "deep residual network for steganalysis of digital images",             # SRNet
                     "camera bias in a fine grained classification task",                    # audit
                     "deep learning image age approximation - what is more relevant: image content or age "
                     "information?"):                                                       # saliency
        assert expected in titles, expected
    srnet = titles["deep residual network for steganalysis of digital images"]
    assert (srnet["journal"], srnet["year"], srnet["doi"]) == (
        "IEEE Transactions on Information Forensics and Security", 2019, "10.1109/TIFS.2018.2871749")
    for ref in cff["references"]:
        assert ref["type"] and ref["authors"] and isinstance(ref["year"], int), ref["title"]
        assert "doi" not in ref or re.fullmatch(r"10\.\d{4,9}/\S+", ref["doi"]), ref["doi"]
