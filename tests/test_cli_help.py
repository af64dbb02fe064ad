"""Every command's --help has an example of itself, and docs/cli.md is the help of the commands as they are."""

import os
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import streamlog
from streamlog.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))


def walk(group, path=()):
    """``(command path, command)`` for every command under ``group``, groups included."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from walk(command, path + (name,))


COMMANDS = [path for path, _ in walk(main)]


def test_the_walk_finds_the_commands():
    assert {("record",), ("record", "synth"), ("record", "audio"), ("range",), ("follow",), ("doctor",),
            ("devices",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_has_an_example_of_that_command(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    help_text = result.stdout
    assert re.search(r"^\s*Examples?:", help_text, re.M), help_text
    assert f"streamlog {' '.join(path)}" in help_text.split("Example", 1)[1], help_text


def test_docs_cli_md_is_the_commands_help_as_it_is_now():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cli_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert result.returncode == 0, result.stderr + " (rerun: python tools/cli_reference.py)"
