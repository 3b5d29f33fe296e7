"""What the database does not hold: the backup's deployment compared with the target's, before loading.

The rule (also in docs/restore.md): a mismatch is an ERROR (exit 4, nothing
touched) when starting Airflow on the restored database would run it against
a schema it does not know, so the database itself is at risk; it is a WARNING
when Airflow starts and the fix is on the deployment (install a provider,
configure a bundle, set a secret) without touching the restored database.

| finding                                                      | severity |
|--------------------------------------------------------------|----------|
| FAB revision unknown to the target's FAB provider (newer)    | error    |
| FAB revision older than the target's FAB head, no --migrate  | error    |
| FAB revision older, with --migrate (`airflow fab-db migrate`)| ok       |
| FAB tables in the backup, no FAB provider on the target      | warning  |
| FAB revision in the backup, target FAB keeps none (2.x)      | warning  |
| auth manager differs                                         | warning  |
| Airflow 3 target without [api_auth] jwt_secret               | warning  |
| a restored connection's type has no provider on the target   | warning  |
| a provider installed at the source is missing on the target  | warning  |
| a DAG bundle the database refers to is not configured        | warning  |
| a fact not recorded (old backup, no executor) or unreadable  | warning  |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from afbackup.errors import PreflightError


@dataclasses.dataclass(frozen=True)
class EnvironmentCheck:
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    fab_action: str = "none"  # none | same | migrate

    def as_dict(self) -> dict[str, Any]:
        return {"errors": list(self.errors), "warnings": list(self.warnings), "fab_action": self.fab_action}

    def raise_errors(self) -> None:
        if self.errors:
            raise PreflightError("the target deployment cannot take this backup: " + "; ".join(self.errors),
                                 hint="see docs/restore.md (what the database does not hold); nothing was changed")


def compare_environment(source: Mapping[str, Any] | None, fab_revision: str | None,
                        target: Mapping[str, Any] | None, *, migrate: bool) -> EnvironmentCheck:
    """Apply the rule table to the backup's recorded environment and the target's (pure)."""
    if not target or "error" in target:
        why = (target or {}).get("error", "no executor to ask")
        return EnvironmentCheck(warnings=(f"the target deployment was not compared with the backup's ({why})",))
    errors: list[str] = []
    warnings: list[str] = []
    fab_action = _fab(fab_revision, target.get("fab"), migrate, errors, warnings)
    src = dict(source or {})
    if not source:
        warnings.append("the backup records no deployment facts (made before afbackup recorded them): auth "
                        "manager, providers and bundles were not compared")
    _auth(src, target, warnings)
    _providers(src, target, warnings)
    _bundles(src, target, warnings)
    return EnvironmentCheck(tuple(errors), tuple(warnings), fab_action)


def _fab(revision: str | None, fab: Mapping[str, Any] | None, migrate: bool, errors: list[str],
         warnings: list[str]) -> str:
    if not revision:
        return "none"
    if fab is None:
        warnings.append(f"the backup holds FAB auth tables (alembic_version_fab {revision}) but the target has no "
                        "FAB provider: those users and roles are not used")
        return "none"
    if fab["head"] is None:
        warnings.append(f"the backup holds alembic_version_fab {revision} but the target's FAB provider keeps no "
                        "schema revision of its own (Airflow 2 migrates the ab_* tables with core): not compared")
        return "none"
    if fab["head"] == revision:
        return "same"
    if revision not in fab.get("revisions", ()):
        errors.append(f"the backup's FAB schema (alembic_version_fab {revision}) is newer than the target's FAB "
                      f"provider (head {fab['head']}): install the FAB provider version of the backup")
        return "none"
    if not migrate:
        errors.append(f"the backup's FAB schema ({revision}) is older than the target's FAB provider "
                      f"({fab['head']}): re-run with --migrate (runs `airflow fab-db migrate`)")
        return "none"
    return "migrate"


def _auth(src: Mapping[str, Any], target: Mapping[str, Any], warnings: list[str]) -> None:
    source_manager, target_manager = src.get("auth_manager"), target.get("auth_manager")
    if source_manager and target_manager and source_manager != target_manager:
        warnings.append(f"auth manager differs: backup {_short(source_manager)}, target {_short(target_manager)}: "
                        "users, roles and passwords do not carry over")
    if target.get("jwt_secret_set") is False:
        warnings.append("the target's [api_auth] jwt_secret is not set: each component makes its own and tokens "
                        "fail between them; set the same secret on every component")


def _providers(src: Mapping[str, Any], target: Mapping[str, Any], warnings: list[str]) -> None:
    available = set(target.get("connection_types") or ())
    used = src.get("connection_types")
    if used is None:
        warnings.append("the backup does not record its connection types: providers were not compared")
    else:
        missing = {name or "(none)": n for name, n in used.items() if name not in available}
        if missing:
            listed = ", ".join(f"{name} ({n} connection(s))" for name, n in sorted(missing.items()))
            warnings.append(f"connection type(s) with no provider on the target: {listed}: tasks using them fail; "
                            "install the provider package(s)")
    source_providers, target_providers = src.get("providers"), target.get("providers")
    if source_providers and target_providers is not None:
        gone = sorted(set(source_providers) - set(target_providers))
        if gone:
            warnings.append("provider(s) installed at the backup's source but not on the target: " + ", ".join(gone))


def _bundles(src: Mapping[str, Any], target: Mapping[str, Any], warnings: list[str]) -> None:
    referred, configured = src.get("bundles"), target.get("bundles")
    if not referred or configured is None:
        return
    missing = sorted(set(referred) - set(configured))
    if missing:
        warnings.append(f"DAG bundle(s) named in the database but not configured on the target: {', '.join(missing)}"
                        ": their DAGs are not parsed nor run; add them to [dag_processor] dag_bundle_config_list")


def _short(classpath: str) -> str:
    return classpath.rsplit(".", 1)[-1]
