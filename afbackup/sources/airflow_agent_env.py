"""The afbackup agent, part 1 (sent before ``airflow_agent.py``, in the same source): the deployment's
environment and its triggers.

Same rules as the agent: standard library plus Airflow, Python >= 3.8, never a
secret's value in a reply (flags, names and digests only).
"""

from __future__ import annotations

import hashlib
import sys
import traceback
from typing import Any


def _environment_or_error() -> dict[str, Any]:
    try:
        return _environment()
    except Exception as exc:  # recorded as unknown: it must never fail a backup
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _environment() -> dict[str, Any]:
    """What this deployment keeps outside its database (names and flags only, never a secret's value)."""
    import airflow
    from airflow.configuration import conf
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    env: dict[str, Any] = {"auth_manager": conf.get("core", "auth_manager", fallback="") or None,
           "providers": {name: info.version for name, info in manager.providers.items()},
           "connection_types": sorted(manager.hooks.keys()),
           "catchup_by_default": conf.getboolean("scheduler", "catchup_by_default", fallback=None),
           "jwt_secret_set": None, "bundles": None}
    if int(airflow.__version__.split(".")[0]) >= 3:
        env["jwt_secret_set"] = _jwt_configured(conf)
        try:
            env["bundles"] = sorted(item["name"] for item in conf.getjson("dag_processor", "dag_bundle_config_list")
                                    or [])
        except Exception:
            env["bundles"] = None
    return env


def _jwt_configured(conf: Any) -> bool:
    """True when [api_auth] jwt_secret (or a private key) is configured, not the per-process random default."""
    if conf.get("api_auth", "jwt_private_key_path", fallback=""):
        return True
    value = conf.get("api_auth", "jwt_secret", fallback="")
    try:
        default = conf.get_default_value("api_auth", "jwt_secret")
    except Exception:
        default = None
    return bool(value) and value != default


def _alembic_revisions(script: Any) -> dict[str, Any]:
    """An alembic script directory's head and every revision it knows (the caller decides what they mean)."""
    return {"head": script.get_current_head(), "revisions": sorted(rev.revision for rev in script.walk_revisions())}


def _fab_schema() -> dict[str, Any] | None:
    """The FAB provider's migration head and revisions (None: no FAB provider here).

    A FAB provider without its own migrations (Airflow 2: core migrates the ab_* tables) has head None.
    """
    import importlib.util

    if importlib.util.find_spec("airflow.providers.fab") is None:
        return None
    try:
        from airflow.providers.fab.auth_manager.models.db import FABDBManager
    except Exception:
        return {"head": None, "revisions": []}
    from alembic.script import ScriptDirectory

    return _alembic_revisions(ScriptDirectory(FABDBManager.migration_dir))


def op_environment(request: dict[str, Any]) -> dict[str, Any]:
    """The target's side of the comparison: environment, plus its FAB schema (head and revisions)."""
    env = _environment_or_error()
    if "error" not in env:
        env["fab"] = _fab_schema()
    return env


def _read_triggers(fernet: Any) -> tuple[dict[str, str], list[str]]:
    """sha256 of every trigger's decrypted kwargs by id, and the ids that do not decrypt with ``fernet``.

    Digests, not values: trigger kwargs can hold credentials. Kwargs stored as
    plain JSON (written before Airflow encrypted them) are read as they are.
    """
    from airflow.utils.session import create_session
    from sqlalchemy import text

    digests: dict[str, str] = {}
    broken: list[str] = []
    with create_session() as session:
        for trigger_id, kwargs in session.execute(text("SELECT id, kwargs FROM trigger")):
            try:
                plain = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode("utf-8")).decode("utf-8")
                digests[str(trigger_id)] = hashlib.sha256(plain.encode("utf-8")).hexdigest()
            except Exception:
                broken.append(str(trigger_id))
    return digests, broken


def _trigger_digests(keys: list[str]) -> dict[str, str]:
    """Every trigger's kwargs digest, read with all ``keys``: after a rotation each must decrypt under the
    target key alone to exactly this (rotate-fernet-key covers triggers in Airflow 2.11 and 3.x)."""
    from cryptography.fernet import Fernet, MultiFernet

    unique = [key for index, key in enumerate(keys) if key not in keys[:index]]
    digests, _ = _read_triggers(MultiFernet([Fernet(key.encode()) for key in unique]))
    return digests
