"""The command table: each command's module is imported only when that command is used (or listed).

Start-up time counts in every CronJob and in ``verify``'s budget, so ``afbackup verify`` must not
import what ``backup`` or ``drill`` need. Each loader is an explicit import that editors, ruff and
mypy follow. To add a command: write ``afbackup/cli/<name>.py`` with a click command, add a loader
here and one entry to ``COMMANDS`` (tests/unit/test_cli_commands.py checks every entry).
"""

from __future__ import annotations

from collections.abc import Callable

import click


def _backup() -> click.Command:
    from afbackup.cli.backup import backup

    return backup


def _list() -> click.Command:
    from afbackup.cli.catalog import list_command

    return list_command


def _show() -> click.Command:
    from afbackup.cli.catalog import show

    return show


def _verify() -> click.Command:
    from afbackup.cli.verify import verify

    return verify


def _restore() -> click.Command:
    from afbackup.cli.restore import restore

    return restore


def _restore_cleanup() -> click.Command:
    from afbackup.cli.restore_cleanup import restore_cleanup

    return restore_cleanup


def _drill() -> click.Command:
    from afbackup.cli.drill import drill

    return drill


def _prune() -> click.Command:
    from afbackup.cli.prune import prune

    return prune


def _pin() -> click.Command:
    from afbackup.cli.prune import pin

    return pin


def _unpin() -> click.Command:
    from afbackup.cli.prune import unpin

    return unpin


def _break_lock() -> click.Command:
    from afbackup.cli.prune import break_lock_command

    return break_lock_command


def _check() -> click.Command:
    from afbackup.cli.check import check

    return check


def _config() -> click.Command:
    from afbackup.cli.config_cmd import config

    return config


def _keys() -> click.Command:
    from afbackup.cli.keys import keys

    return keys


def _unpause() -> click.Command:
    from afbackup.cli.unpause import unpause

    return unpause


def _smoke() -> click.Command:
    from afbackup.cli.smoke import smoke

    return smoke


def _canary() -> click.Command:
    from afbackup.cli.canary import canary

    return canary


def _fleet() -> click.Command:
    from afbackup.cli.fleet import fleet

    return fleet


def _deploy() -> click.Command:
    from afbackup.cli.deploy import deploy

    return deploy


COMMANDS: dict[str, Callable[[], click.Command]] = {
    "backup": _backup, "list": _list, "show": _show, "verify": _verify, "restore": _restore,
    "restore-cleanup": _restore_cleanup, "drill": _drill,
    "prune": _prune, "pin": _pin, "unpin": _unpin, "break-lock": _break_lock, "check": _check, "config": _config,
    "unpause": _unpause, "smoke": _smoke, "canary": _canary, "keys": _keys, "fleet": _fleet, "deploy": _deploy,
}
