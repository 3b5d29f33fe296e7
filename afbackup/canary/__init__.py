"""The canary DAG shipped with afbackup (``afbackup canary print|install``; ``drill --live`` uses it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DAG_ID = "afbackup_canary"
FILE_NAME = "afbackup_canary.py"


def source() -> str:
    """The DAG file's text."""
    return resources.files(__package__).joinpath(FILE_NAME).read_text(encoding="utf-8")


def install(dags_folder: str | Path) -> Path:
    """Write the DAG file into ``dags_folder`` (created if missing); returns its path."""
    folder = Path(dags_folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILE_NAME
    tmp = target.with_name(f".{FILE_NAME}.tmp")
    tmp.write_text(source(), encoding="utf-8")
    tmp.replace(target)  # the DAG processor never parses a half-written file
    return target
