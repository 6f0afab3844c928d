"""The command line: --help everywhere, training through the CLI, one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from intriguing.cli import main


def subcommands():
    return sorted(main.commands)


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_unknown_model_is_one_line_not_a_traceback():
    result = CliRunner().invoke(main, ["train", "FC100-100"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'FC100-100'")
