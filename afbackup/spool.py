"""Spool space: is there room for the decrypted dump before anything is downloaded?

``restore``, ``verify --deep`` and ``drill`` write the decrypted dump to a private
spool directory (``restore.spool_dir``, default the system temp dir) because
``pg_restore -j`` needs a seekable file. The dump's size is known before the
download: the manifest lists every archive member with its size, and the dump
is the ``db/airflow.pgdump.*`` members. A spool that cannot hold it fails here,
in seconds, with exit 4 — not after the whole archive was downloaded, and not
as an OOM kill when the spool is memory-backed (a tmpfs reports its size limit
as its capacity, so the same check covers it).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from afbackup.archive import DUMP_BASENAME
from afbackup.errors import PreflightError
from afbackup.manifest import Manifest

logger = logging.getLogger(__name__)

# Besides the dump, the spool holds pg_restore's table-of-contents list (a few KiB per hundred
# tables): 1 MiB of headroom, in bytes.
SPOOL_HEADROOM = 2**20


def dump_bytes(manifest: Manifest) -> int:
    """Size of the decrypted, decompressed dump in bytes (sum of its archive members)."""
    return sum(member.size for member in manifest.members if member.name.startswith(DUMP_BASENAME + "."))


def spool_bytes_needed(manifest: Manifest) -> int:
    """Free bytes the spool directory needs for this backup: the dump plus ``SPOOL_HEADROOM``."""
    return dump_bytes(manifest) + SPOOL_HEADROOM


def check_spool_space(spool: Path, manifest: Manifest) -> None:
    """Raise ``PreflightError`` (exit 4) when ``spool`` has less free space than the dump needs."""
    needed = spool_bytes_needed(manifest)
    free = shutil.disk_usage(spool).free
    if free < needed:
        raise PreflightError(
            f"not enough space to spool the decrypted dump of backup {manifest.backup_id}: it needs "
            f"{_human(needed)} ({needed} bytes) in {spool.parent}, which has {_human(free)} free",
            hint="free space there, or set restore.spool_dir (AFBACKUP_RESTORE_SPOOL_DIR) to a filesystem with "
                 "room (see docs/configuration.md, [restore]); nothing was downloaded or changed",
            stage="spool")
    logger.debug("spool %s: %d bytes needed, %d free", spool, needed, free)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"
