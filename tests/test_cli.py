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


@pytest.mark.parametrize("command", [["attack", "FC10(1e-4)"], ["transfer", "FC10(1e-4)", "FC10(1e-2)"],
                                     ["units", "FC10(1e-4)", "--layer", "out"]])
@pytest.mark.parametrize("fit", [None, "squash"])
def test_every_command_with_data_hands_fit_to_the_image_loader(command, fit, tmp_path, monkeypatch):
    """--fit (default crop) reaches load_images from each command that takes --data."""
    from intriguing import zoo
    from intriguing.commands import inputs
    from intriguing.errors import IntriguingError

    monkeypatch.setattr(zoo, "trained", lambda name, **kw: zoo.TrainedModel(zoo.build(name, seed=0), None))

    def loader(path, **kwargs):
        raise IntriguingError(f"fit={kwargs['fit']}")
    monkeypatch.setattr(inputs, "load_images", loader)
    result = CliRunner().invoke(main, [*command, "--data", str(tmp_path), *(["--fit", fit] if fit else [])])
    assert result.output.strip().splitlines()[-1] == f"error: fit={fit or 'crop'}"
