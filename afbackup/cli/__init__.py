"""The ``afbackup`` command line: the root group, and the ONLY place errors become exit codes.

Library code raises ``AfbackupError`` subclasses (or lets unexpected errors
through); ``main()`` logs one ERROR line (what failed — what to do), keeps the
traceback for ``-v``, and exits with the documented code (errors.ExitCode).
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys

import click

import afbackup
from afbackup.cli.context import AppContext, ReportedFailure
from afbackup.errors import AfbackupError, ExitCode
from afbackup.log import configure_logging, redact

logger = logging.getLogger("afbackup.cli")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM/SIGINT. A KeyboardInterrupt, so s3transfer cancels
    and aborts multipart uploads, and no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, _frame) -> None:
    raise Terminated(signum)


# Command name -> "module:attribute". Loaded on use, so `afbackup verify` does not import what
# `backup` or `drill` need: start-up time counts in every CronJob and in verify's budget.
COMMANDS = {
    "backup": "backup:backup", "list": "catalog:list_command", "show": "catalog:show",
    "verify": "verify:verify", "restore": "restore:restore", "drill": "drill:drill",
    "prune": "prune:prune", "pin": "prune:pin", "unpin": "prune:unpin", "break-lock": "prune:break_lock_command",
    "check": "check:check", "config": "config_cmd:config", "smoke": "smoke:smoke", "canary": "canary:canary",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(f"afbackup.cli.{module}"), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="FILE", envvar="AFBACKUP_CONFIG",
              help="Config file (default: $AFBACKUP_CONFIG or /etc/afbackup/config.toml).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv includes library debug logs).")
@click.option("-q", "--quiet", count=True, help="Less logging (-q warnings, -qq errors only).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="AFBACKUP_LOG_FORMAT",
              show_default=True, help="Log line format on stderr.")
@click.version_option(afbackup.__version__, prog_name="afbackup")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: int, log_format: str) -> None:
    """Backup and disaster recovery for Apache Airflow (metadata DB, connections, variables, pools)."""
    configure_logging(verbose - quiet, log_format)
    app = ctx.ensure_object(AppContext)
    app.config_path, app.verbosity, app.log_format = config_path, verbose - quiet, log_format
    app.command = ctx.invoked_subcommand or ""




def _interrupted(exc: Terminated) -> tuple[int, str]:
    return _failed(f"interrupted by signal {exc.signum}: stopped; nothing incomplete was committed",
                   ExitCode.SIGNAL_BASE + exc.signum)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with the documented code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    app = AppContext(config_path=None, verbosity=0, log_format="text")
    code, error = ExitCode.UNEXPECTED, ""
    try:
        code, error = _run(argv, app)
        return code
    finally:
        try:
            app.finish(code, error)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _run(argv: list[str] | None, app: AppContext) -> tuple[int, str]:
    """The command's exit code and its error line ("" on success)."""
    try:
        code = cli.main(args=argv, prog_name="afbackup", standalone_mode=False, obj=app)
        return int(code or 0), ""
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, Terminated):  # click turns KeyboardInterrupt into Abort
            return _interrupted(exc.__cause__)
        click.echo("Aborted.", err=True)
        return ExitCode.USAGE, "aborted"
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE, exc.format_message()
    except ReportedFailure as exc:
        return _failed(str(exc), exc.exit_code)
    except AfbackupError as exc:
        logger.debug("exception details", exc_info=True)
        return _failed(exc.one_line(), int(exc.exit_code))
    except Terminated as exc:
        return _interrupted(exc)
    except Exception as exc:  # the one place an unexpected error becomes exit 1
        logger.debug("exception details", exc_info=True)
        return _failed(f"unexpected error: {type(exc).__name__}: {exc} — run with -v for details and report it",
                       ExitCode.UNEXPECTED)


def _failed(line: str, code: int) -> tuple[int, str]:
    line = redact(line)
    logger.error(line)
    return int(code), line
