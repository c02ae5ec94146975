"""Every sub-command has help text and is documented in the README; `galscale --help` is fast."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

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
