"""Deployments: ``[deployments.<name>]`` overlays over the shared top level of one config file.

A deployment's table holds the same sections as the top level
(``[deployments.team-a.storage]`` …); a key set there overrides the shared
one. The deployment's name is its ``backup.name`` (what its manifests record):
inside ``[deployments.<name>]`` ``backup.name`` is implied, and setting it
anywhere else (top level, overlay, environment, flag) to another value is an
error. Two deployments may not share a storage prefix (the same URL, or one a
prefix of the other, at the same endpoint): their backups, locks and prunes
would mix.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

from afbackup.errors import ConfigError

KEY = "deployments"
NAME_KEY = "backup.name"
# A DNS-1123 label, short enough for Kubernetes object names and namespaces built from it.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def split(data: Mapping[str, Any], path: object) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The shared top level and the overlays (by name, sorted) of a parsed config file."""
    base = {key: value for key, value in data.items() if key != KEY}
    raw = data.get(KEY, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: `deployments` must be tables [deployments.NAME], not a value")
    overlays: dict[str, dict[str, Any]] = {}
    for name in sorted(raw):
        overlay = raw[name]
        if not isinstance(overlay, dict):
            raise ConfigError(f"config file {path}: deployments.{name} must be a table [deployments.{name}]")
        if not _NAME.match(name):
            raise ConfigError(f"config file {path}: deployment name {name!r} is not valid",
                              hint="use 1-40 lower-case letters, digits and '-' (it names Kubernetes objects)")
        if KEY in overlay:
            raise ConfigError(f"config file {path}: [deployments.{name}] cannot declare deployments itself")
        _check_name_key(overlay, name, f"config file {path} [deployments.{name}]")
        overlays[name] = overlay
    if overlays:
        _check_name_key(base, None, f"config file {path}")
    return base, overlays


def _check_name_key(section: Mapping[str, Any], name: str | None, where: str) -> None:
    backup = section.get("backup", {})
    if not isinstance(backup, dict) or "name" not in backup:
        return
    if name is None:
        raise ConfigError(f"{where}: backup.name cannot be set at the top level of a file with deployments",
                          hint="each deployment's name is its backup.name; remove the key")
    if backup["name"] != name:
        raise ConfigError(f"{where}: backup.name = {backup['name']!r} differs from the deployment's name",
                          hint=f"remove backup.name: inside [deployments.{name}] it is {name!r}")


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with every key of ``overlay`` set over it (tables merge, values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def flat_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in data.items():
        if isinstance(value, dict):
            yield from flat_keys(value, f"{prefix}{name}.")
        else:
            yield prefix + name


def resolve(base: Mapping[str, Any], overlays: Mapping[str, dict[str, Any]], name: str,
            path: object) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged data of deployment ``name`` and the source of each key set by the file."""
    if name not in overlays:
        raise ConfigError(f"deployment {name!r} is not declared in config file {path}", hint=choices(overlays))
    overlay = overlays[name]
    data = merge(base, overlay)
    data.setdefault("backup", {})["name"] = name
    sources = {key: f"file {path}" for key in flat_keys(base)}
    sources.update({key: f"file {path} [deployments.{name}]" for key in flat_keys(overlay)})
    sources[NAME_KEY] = f"file {path} [deployments.{name}]"
    return data, sources


def choices(overlays: Mapping[str, Any]) -> str:
    return f"choose one with --deployment NAME or AFBACKUP_DEPLOYMENT: {', '.join(overlays)}"


def storage_location(data: Mapping[str, Any]) -> tuple[str, str]:
    storage = data.get("storage", {}) if isinstance(data.get("storage"), dict) else {}
    return str(storage.get("endpoint_url", "") or ""), str(storage.get("url", "") or "").rstrip("/")


def check_prefixes(base: Mapping[str, Any], overlays: Mapping[str, dict[str, Any]], path: object) -> None:
    """Exit 3 when two deployments' storage prefixes are equal or nested (at the same endpoint)."""
    check_locations({name: storage_location(merge(base, overlay)) for name, overlay in overlays.items()},
                    f"config file {path}")


def check_locations(located: Mapping[str, tuple[str, str]], where: str) -> None:
    """``located``: deployment -> (endpoint_url, url)."""
    names = sorted(located)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            (end1, url1), (end2, url2) = located[first], located[second]
            if end1 != end2 or not url1 or not url2:
                continue
            if url1 == url2 or url2.startswith(url1 + "/") or url1.startswith(url2 + "/"):
                raise ConfigError(
                    f"{where}: deployments {first} ({url1}) and {second} ({url2}) share a storage prefix",
                    hint="give each deployment its own storage.url; neither may lie inside the other")
