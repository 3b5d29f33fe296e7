"""``afbackup deploy render --out DIR``: Kustomize base + one overlay per deployment, from the config file."""

from __future__ import annotations

from pathlib import Path

import click

from afbackup.cli.context import AppContext, emit, pass_app
from afbackup.config import load_fleet
from afbackup.config.load import select_fleet


@click.group()
def deploy() -> None:
    """Deployment manifests generated from the configuration."""


@deploy.command("render")
@click.option("--out", "out", required=True, metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write (new, empty, or an earlier render's output).")
@pass_app
def render(app: AppContext, out: Path) -> int:
    """Write deterministic Kubernetes manifests for every deployment (apply with `kubectl apply -k DIR`)."""
    from afbackup.deploy_render import render as write

    # nothing from this machine's environment goes into the manifests
    fleet = select_fleet(load_fleet(app.config_path, environ={}), app.deployment)
    source = Path(app.config_path).name if app.config_path else "the default config"
    written = write(fleet, source, out)
    emit(f"wrote {len(written)} files for {len(fleet)} deployment(s) under {out}: "
         f"kubectl kustomize {out} | kubectl apply -f -")
    return 0
