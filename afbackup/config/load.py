"""Resolve the configuration once: defaults < TOML file < AFBACKUP_* env < flags.

The result is a frozen ``Settings`` that records where each value came from,
for ``afbackup config show``. Nothing else in afbackup reads ``os.environ``
for configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, ValidationError

from afbackup.config.model import Config
from afbackup.errors import ConfigError

DEFAULT_PATH = Path("/etc/afbackup/config.toml")
ENV_PREFIX = "AFBACKUP_"
# Environment variables that are not configuration keys.
ENV_GLOBALS = frozenset({"AFBACKUP_CONFIG", "AFBACKUP_LOG_FORMAT"})
SECRET_HINTS = ("password", "passphrase", "secret", "token", "webhook")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved configuration and the source of every value."""

    config: Config
    sources: Mapping[str, str]
    path: Path | None

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
) -> Settings:
    """Load, merge and validate. Raises ``ConfigError`` (exit 3) on any problem."""
    environ = os.environ if environ is None else environ
    config_path = _config_path(path, environ)
    data: dict[str, Any] = _read_toml(config_path) if config_path else {}
    sources = {key: f"file {config_path}" for key in _flat_keys(data)}
    known = dict(iter_keys())
    for key, raw in _env_values(environ, known):
        _set(data, key, _coerce_env(raw, known[key]))
        sources[key] = f"env {env_name(key)}"
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set(data, key, value)
        sources[key] = "flag"
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, sources) from None
    return Settings(config=config, sources=sources, path=config_path)


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
