"""Every verb of both command lines teaches by example, and follows the shared conventions."""
import click
import pytest
from click.testing import CliRunner

from control.cli import main as ctl
from edge.cli import main as edge


def verbs(group, path=()):
    """(path, command) of every leaf command below `group`."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from verbs(command, path + (name,))
        else:
            yield path + (name,), command


ALL = [(root, path) for root in (ctl, edge) for path, _ in verbs(root)]


@pytest.mark.parametrize("root, path", ALL, ids=[f"{r.name} {' '.join(p)}" for r, p in ALL])
def test_every_verb_has_an_example_in_its_help(root, path):
    result = CliRunner().invoke(root, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert any(line.strip().removeprefix("sudo ").startswith(("deeplens-ctl ", "deeplens-edge ", "DEEPLENS_"))
               for line in result.output.splitlines())


def test_every_device_verb_takes_the_same_device_forms():
    """One DEVICE argument, with one help text, on every verb that talks to a device."""
    helps = {path: CliRunner().invoke(ctl, [*path, "--help"]).output for path, _ in verbs(ctl)}
    device_verbs = sorted(" ".join(p) for p, text in helps.items() if "DEVICE" in text.split("\n")[0])
    assert device_verbs == ["capture", "doctor", "models", "pull", "rollback", "status", "swap-model", "threshold",
                            "watch"]
    for path, text in helps.items():
        if " ".join(path) in device_verbs:
            assert "host:port" in text and "devices.yaml" in text
