"""Object stores: S3 (``s3://``) and the filesystem (``file://``), behind one interface."""

from __future__ import annotations

from typing import Any

from afbackup.config.model import StorageConfig
from afbackup.errors import ConfigError
from afbackup.storage.base import ObjectStore


def open_store(cfg: StorageConfig, *, session: Any = None) -> ObjectStore:
    """The store for ``storage.url``; boto3 is imported only for S3 (``session``: a shared boto3 session)."""
    if not cfg.url:
        raise ConfigError("storage.url is not set", hint="set [storage] url to s3://BUCKET/PREFIX or file:///PATH")
    if cfg.url.startswith("file://"):
        from afbackup.storage.local import LocalStore

        return LocalStore(cfg.url)
    from afbackup.storage.s3 import S3Store

    return S3Store(cfg, session=session)
