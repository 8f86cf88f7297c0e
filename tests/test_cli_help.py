"""The CLI describes itself: every command in `autoheri --help`, defaults in each command's
help, --quiet before or after the command."""

from __future__ import annotations

import pytest

from autoheri_jax.cli import build_parser, main

COMMANDS = (
    "prepare",
    "run",
    "search",
    "retrain",
    "evaluate",
    "evolve",
    "study",
    "export",
    "predict",
    "report",
)


def test_top_level_help_describes_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        line = next(x for x in out.splitlines() if x.strip().startswith(command + " "))
        assert len(line.split()) > 2, f"{command} has no description: {line!r}"


def test_command_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("(default: 10)", "(default: 0.1)", "(default: 0)", "(default: strict)"):
        assert flag in out
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize(
    "argv",
    [["-q", "report", "DIR"], ["report", "-q", "DIR"], ["--quiet", "report", "DIR"]],
)
def test_quiet_goes_before_or_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet or args.quiet_first
