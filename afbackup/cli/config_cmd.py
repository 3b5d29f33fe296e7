"""``afbackup config show``: every effective value and where it came from, secrets masked."""

from __future__ import annotations

from typing import Any

import click

from afbackup.cli.context import AppContext, emit, emit_json, pass_app
from afbackup.config import env_name, iter_keys
from afbackup.config.load import is_secret_key
from afbackup.log import redact


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--deployment", metavar="NAME", help="Show [deployments.NAME] (same as the root --deployment).")
@pass_app
def show_config(app: AppContext, as_json: bool, deployment: str | None) -> int:
    """Print the effective configuration with the source of each value."""
    if deployment:
        app.deployment = deployment
    settings = app.settings()
    data = settings.config.model_dump(by_alias=True)
    rows = []
    for key, _ in iter_keys():
        value = data
        for part in key.split("."):
            value = value[part]
        shown = "***" if is_secret_key(key) and value else _masked(value)
        rows.append({"key": key, "value": shown, "source": settings.source_of(key), "env": env_name(key)})
    if as_json:
        emit_json({"file": str(settings.path) if settings.path else None, "deployment": settings.deployment,
                   "values": rows})
        return 0
    emit(f"# config file: {settings.path or '(none)'}")
    if settings.deployment:
        emit(f"# deployment: {settings.deployment}")
    for row in rows:
        emit(f"{row['key']:<40} = {row['value']!r:<50} # {row['source']}")
    return 0


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_masked(item) for item in value]
    return value
