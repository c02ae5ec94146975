"""Every sub-command has help text and is documented in the README; `galscale --help` is fast."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galscale.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options_without_help(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    missing = []
    for name, sub in _subcommands(parser).items():
        missing += [f"{prefix}{name} {a.option_strings[0]}" for a in sub._actions
                    if a.option_strings and a.dest != "help" and not a.help]
        missing += _options_without_help(sub, f"{prefix}{name} ")
    return missing


def test_every_command_is_in_the_readme_and_every_option_has_help():
    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    commands = _subcommands(parser)
    assert {"demo", "simulate", "classify", "classify-cutouts", "train", "report"} <= set(commands)
    for name in commands:
        assert f"galscale {name}" in readme or f"`{name}`" in readme, name
    assert _options_without_help(parser, "galscale ") == []


def test_top_level_help_is_fast_and_lists_commands():
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "galscale.cli", "--help"], capture_output=True,
                         text=True, check=True, timeout=120)
    assert "classify" in out.stdout and "simulate" in out.stdout
    assert time.perf_counter() - started < 60  # no torch/escnn import just to print help


def test_classify_framing_options_reach_the_cutout_config():
    from galscale.cli import add_classify_arguments, job_config_from_args

    parser = argparse.ArgumentParser()
    add_classify_arguments(parser)
    base = ["--survey", "s.zarr", "--out", "runs"]
    default = job_config_from_args(parser.parse_args(base)).cutouts
    assert default.morph_side_per_radius == 16.0 and default.morph_min_side_px == 32.0
    cfg = job_config_from_args(parser.parse_args(
        [*base, "--morph-side-per-radius", "0", "--morph-min-side-px", "64"])).cutouts
    assert cfg.morph_side_per_radius is None and cfg.morph_min_side_px == 64.0


def test_input_errors_are_one_line_and_exit_status_2(tmp_path, capsys):
    """A missing survey or table is one line on stderr with exit status 2, from the console
    script and from the Ray job's entry point; a fault in galscale still raises."""
    from galscale.cli import main, run_reporting_input_errors

    missing = tmp_path / "no-such-survey.zarr"
    assert main(["classify", "--survey", str(missing), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"galscale classify: error: no survey at {missing}: survey not found: "
                   f"{missing}"]
    assert main(["evaluate", "catalog", str(tmp_path / "a.parquet"),
                 str(tmp_path / "b.parquet")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"galscale evaluate: error: no such file or directory: {tmp_path / 'a.parquet'}")

    def bug() -> int:
        raise ZeroDivisionError("a fault in galscale")

    with pytest.raises(ZeroDivisionError):  # a programming error keeps its traceback
        run_reporting_input_errors("galscale x", bug)

    job = subprocess.run([sys.executable, str(REPO / "jobs" / "classify_survey.py"), "--survey",
                          str(missing), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert job.returncode == 2
    assert job.stderr.strip().splitlines()[-1].startswith(
        "jobs/classify_survey.py: error: no survey at")
    assert "Traceback" not in job.stderr
