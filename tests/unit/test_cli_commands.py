"""The command table: every entry loads a click command of that name, and loading stays lazy."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from afbackup.cli import cli
from afbackup.cli.commands import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_entry_loads_a_click_command_of_its_name(name):
    command = COMMANDS[name]()
    assert isinstance(command, click.Command)
    assert command.name == name
    assert cli.get_command(click.Context(cli), name) is command


def test_the_group_lists_exactly_the_table():
    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)


def test_running_one_command_imports_no_other_command_module():
    # WHEN `afbackup verify --help` is resolved in a fresh interpreter
    code = ("import json, sys; from afbackup.cli import run; run(['verify', '--help']); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('afbackup.cli.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # THEN only verify's own module was imported among the command modules
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert loaded == {"afbackup.cli.commands", "afbackup.cli.context", "afbackup.cli.verify"}, loaded
