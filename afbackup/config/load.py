"""Resolve the configuration once: defaults < TOML file < [deployments.X] < AFBACKUP_* env < flags.

The result is a frozen ``Settings`` that records where each value came from,
for ``afbackup config show``. Nothing else in afbackup reads ``os.environ``
for configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from afbackup.config import deployments as dep
from afbackup.config.model import Config, no_password
from afbackup.errors import ConfigError

DEFAULT_PATH = Path("/etc/afbackup/config.toml")
ENV_PREFIX = "AFBACKUP_"
# Environment variables that are not configuration keys.
ENV_GLOBALS = frozenset({"AFBACKUP_CONFIG", "AFBACKUP_LOG_FORMAT", "AFBACKUP_DEPLOYMENT"})
DEPLOYMENT_ENV = "AFBACKUP_DEPLOYMENT"
SECRET_HINTS = ("password", "passphrase", "secret", "token", "webhook")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved configuration and the source of every value."""

    config: Config
    sources: Mapping[str, str]
    path: Path | None
    deployment: str | None = None  # the selected [deployments.<name>], if the file declares any

    def source_of(self, key: str) -> str:
        return self.sources.get(key, "default")


def env_name(key: str) -> str:
    """``storage.endpoint_url`` -> ``AFBACKUP_STORAGE_ENDPOINT_URL``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def iter_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf key of the schema as (dotted name, default value), TOML names."""
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_keys(annotation, key + ".")
        else:
            yield key, field.default


def load_settings(
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    deployment: str | None = None,
) -> Settings:
    """Load, merge and validate. Raises ``ConfigError`` (exit 3) on any problem.

    A file with ``[deployments.<name>]`` tables needs a selection: ``deployment``
    or ``AFBACKUP_DEPLOYMENT`` (an error listing the names otherwise).
    """
    environ = os.environ if environ is None else environ
    config_path = _config_path(path, environ)
    data: dict[str, Any] = _read_toml(config_path) if config_path else {}
    base, overlays = dep.split(data, config_path)
    selected = deployment or environ.get(DEPLOYMENT_ENV) or None
    if overlays:
        dep.check_prefixes(base, overlays, config_path)
        if not selected:
            raise ConfigError(f"config file {config_path} declares deployments and none is selected",
                              hint=dep.choices(overlays))
    elif selected:
        where = f"config file {config_path}" if config_path else "no config file"
        raise ConfigError(f"deployment {selected!r} selected, but {where} declares no [deployments.*]",
                          hint=f"declare [deployments.{selected}] or unset --deployment / {DEPLOYMENT_ENV}")
    return _settings(config_path, base, overlays, selected, environ, overrides or {})


def load_fleet(path: str | os.PathLike | None = None,
               environ: Mapping[str, str] | None = None) -> dict[str, Settings]:
    """Every deployment of the file, by name (sorted); a file without deployments is one, named by backup.name."""
    environ = os.environ if environ is None else environ
    config_path = _config_path(path, environ)
    data: dict[str, Any] = _read_toml(config_path) if config_path else {}
    base, overlays = dep.split(data, config_path)
    if not overlays:
        single = _settings(config_path, base, overlays, None, environ, {})
        return {single.config.backup.name: single}
    dep.check_prefixes(base, overlays, config_path)
    fleet = {name: _settings(config_path, base, overlays, name, environ, {}) for name in overlays}
    # an AFBACKUP_STORAGE_* variable applies to every deployment: it must not merge their prefixes
    dep.check_locations({name: (s.config.storage.endpoint_url, s.config.storage.url) for name, s in fleet.items()},
                        "with the AFBACKUP_* environment")
    return fleet


def select_fleet(fleet: Mapping[str, Settings], deployment: str | None) -> dict[str, Settings]:
    """All deployments, or only ``deployment`` (an unknown name is a ConfigError listing the names)."""
    if not deployment:
        return dict(fleet)
    if deployment not in fleet:
        raise ConfigError(f"deployment {deployment!r} is not in the configuration", hint=dep.choices(fleet))
    return {deployment: fleet[deployment]}


def _settings(config_path: Path | None, base: dict[str, Any], overlays: Mapping[str, dict[str, Any]],
              selected: str | None, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> Settings:
    if selected:
        data, sources = dep.resolve(base, overlays, selected, config_path)
    else:
        data, sources = dep.merge(base, {}), {key: f"file {config_path}" for key in _flat_keys(base)}
    known = dict(iter_keys())
    for key, raw in _env_values(environ, known):
        _set(data, key, _coerce_env(raw, known[key]))
        sources[key] = f"env {env_name(key)}"
    for key, value in overrides.items():
        if value is None:
            continue
        _set(data, key, value)
        sources[key] = "flag"
    if selected and data["backup"]["name"] != selected:
        raise ConfigError(f"backup.name = {data['backup']['name']!r} (from {sources[dep.NAME_KEY]}) differs from "
                          f"the selected deployment {selected!r}",
                          hint="a deployment's backup.name is its name; unset the override")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, sources) from None
    # libpq's password variable: resolved here once, like every other input from the environment.
    config._pgpassword = environ.get("PGPASSWORD") or None
    return Settings(config=config, sources=sources, path=config_path, deployment=selected)


def _config_path(path: str | os.PathLike | None, environ: Mapping[str, str]) -> Path | None:
    if path:
        return Path(path)
    if environ.get("AFBACKUP_CONFIG"):
        return Path(environ["AFBACKUP_CONFIG"])
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="pass --config or set AFBACKUP_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} is not readable: {exc.strerror}",
                          hint="check the path and its permissions") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _flat_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in data.items():
        if isinstance(value, dict):
            yield from _flat_keys(value, f"{prefix}{name}.")
        else:
            yield prefix + name


def _env_values(environ: Mapping[str, str], known: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    by_env = {env_name(key): key for key in known}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in ENV_GLOBALS:
            continue
        if name not in by_env:
            raise ConfigError(
                f"unknown environment variable {name}",
                hint="see docs/configuration.md for the AFBACKUP_* names; remove or rename it",
            )
        yield by_env[name], environ[name]


def _coerce_env(raw: str, default: Any) -> Any:
    """Env values are strings; lists take a JSON array or comma-separated items."""
    if isinstance(default, tuple):
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment value {text!r} is not a JSON array: {exc}") from None
        return [item.strip() for item in text.split(",") if item.strip()]
    if default is None and raw.strip() == "":
        return None
    return raw


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {part} must be a table [{part}], not a value")
        node = child
    node[leaf] = value


def _config_error(exc: ValidationError, sources: Mapping[str, str]) -> ConfigError:
    first = exc.errors()[0]
    unknown = first["type"] == "extra_forbidden"
    key = ".".join(str(p) for p in first["loc"]) if unknown else _error_key(first["loc"])
    message = "unknown key" if unknown else first["msg"].removeprefix("Value error, ")
    origin = sources.get(key) or next((src for k, src in sources.items() if k.startswith(key + ".")), "")
    origin = origin or next((src for src in sources.values() if src.startswith("file ")), "")
    where = f" (from {origin})" if origin else ""
    more = f"; and {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
    return ConfigError(f"invalid configuration: {key or 'config'}: {message}{where}{more}")


def _error_key(loc: tuple) -> str:
    """The config key an error is about: pydantic adds list indexes and union/validator tags to the path."""
    known = {key for key, _ in iter_keys()}
    sections = {key.rsplit(".", 1)[0] for key in known}
    parts = [str(part) for part in loc if isinstance(part, str)]
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known or candidate in sections:
            return candidate
    return ".".join(parts)


def is_secret_key(key: str) -> bool:
    """Keys whose *values* are masked by ``config show`` (paths to secrets and names of variables are shown)."""
    leaf = key.rsplit(".", 1)[-1]
    return any(hint in leaf for hint in SECRET_HINTS) and not leaf.endswith(("_file", "_command", "_env"))


def dsn_flag(value: str, flag: str) -> str:
    """A DSN given as a flag (``--target-dsn``, ``--scratch-dsn``), refused as the config refuses a DSN key.

    A password in it would reach pg_restore's argv (visible in ``ps``) and the runbook's output.
    Raises ``ConfigError`` (exit 3) naming the flag and where the password goes instead.
    """
    try:
        return no_password(value)
    except ValueError as exc:
        if "password" not in str(exc):
            raise ConfigError(f"invalid {flag}: {exc}") from None
        raise ConfigError(f"invalid {flag}: contains a password (it would show on pg_restore's command line)",
                          hint="pass the DSN without it and give the password in restore.password_file, "
                               "PGPASSWORD or PGPASSFILE") from None
