"""One writer per storage prefix: a lock object created only if absent.

The lock holds who took it (host, pid, operation, start time) and when it
expires. While the run lasts, a thread refreshes the expiry every third of
the TTL after checking the lock is still ours; if it was lost (deleted,
taken over), the run is told and aborts instead of continuing unlocked. A
lock whose expiry has passed is stale (its holder died) and is taken over,
with a warning naming the old holder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

from afbackup.errors import LockedError, StorageError
from afbackup.log import event
from afbackup.manifest import LOCKS, iso, utcnow
from afbackup.storage.base import AlreadyExists, ObjectStore

logger = logging.getLogger(__name__)

WRITER_LOCK = f"{LOCKS}writer.lock"


def describe_holder(doc: dict[str, Any]) -> str:
    return (f"{doc.get('operation', '?')} by {doc.get('host', '?')} pid {doc.get('pid', '?')} "
            f"since {doc.get('started_at', '?')} (expires {doc.get('expires_at', '?')})")


def read_lock(store: ObjectStore, key: str = WRITER_LOCK) -> dict[str, Any] | None:
    if store.head(key) is None:
        return None
    try:
        return json.loads(store.get_bytes(key, limit=1 << 16))
    except (ValueError, StorageError):
        return {"operation": "unknown", "expires_at": None}


def is_stale(doc: dict[str, Any], now: dt.datetime) -> bool:
    expires = doc.get("expires_at")
    try:
        return expires is None or dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) < now
    except (AttributeError, ValueError):
        return True


@dataclasses.dataclass(frozen=True)
class BrokenLock:
    holder: dict[str, Any] | None  # None: there was no lock
    stale: bool
    removed: bool


def break_lock(store: ObjectStore, *, yes: bool, force: bool, now: dt.datetime) -> BrokenLock:
    """Remove the writer lock: a stale one with ``yes``, a live one only with ``force`` as well.

    Without ``yes`` nothing is removed (the caller shows the holder and exits 2).
    A live holder whose lock is forced away notices at its next refresh and
    aborts without committing. The lock is read again just before deleting;
    if it changed (refreshed or taken by another run) nothing is removed.
    """
    holder = read_lock(store)
    if holder is None:
        return BrokenLock(None, False, False)
    stale = is_stale(holder, now)
    if not yes:
        return BrokenLock(holder, stale, False)
    if not stale and not force:
        raise LockedError(f"the lock is live: {describe_holder(holder)}",
                          hint="wait for the run to finish; if you know its holder is dead, add --force")
    if read_lock(store) != holder:
        raise LockedError("the lock changed while breaking it (refreshed or taken by another run)",
                          hint="run `afbackup break-lock` again to see the current holder")
    failures = store.delete([WRITER_LOCK])
    if failures:
        raise StorageError(f"could not remove the lock: {failures[0].code} {failures[0].message}")
    logger.warning("removed %s lock held by %s", "stale" if stale else "LIVE", describe_holder(holder),
                   extra=event(action="break-lock", state="removed", stale=stale))
    return BrokenLock(holder, stale, True)


class StoreLock:
    """``with StoreLock(store, "backup", ttl=1800):`` — raises ``LockedError`` (exit 9) if held."""

    def __init__(self, store: ObjectStore, operation: str, *, ttl: float,
                 clock: Callable[[], dt.datetime] = utcnow, key: str = WRITER_LOCK) -> None:
        self.store, self.operation, self.ttl, self.clock, self.key = store, operation, ttl, clock, key
        self.token = secrets.token_hex(8)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._started = clock()
        self._thread: threading.Thread | None = None

    def _document(self) -> bytes:
        doc = {"operation": self.operation, "host": socket.gethostname(), "pid": os.getpid(),
               "started_at": iso(self._started), "expires_at": iso(self.clock() + dt.timedelta(seconds=self.ttl)),
               "token": self.token}
        return json.dumps(doc, indent=1).encode()

    def acquire(self) -> None:
        try:
            self.store.put_bytes(self.key, self._document(), create_only=True)
        except AlreadyExists:
            holder = read_lock(self.store, self.key) or {}
            if not is_stale(holder, self.clock()):
                raise LockedError(f"another run holds the lock of {self.store.describe()}: {describe_holder(holder)}",
                                  hint="wait for it to finish; if its holder is dead, run `afbackup break-lock --yes`"
                                  ) from None
            logger.warning("taking over a stale lock: %s", describe_holder(holder),
                           extra=event(action="lock", state="takeover"))
            self.store.delete([self.key])
            try:
                self.store.put_bytes(self.key, self._document(), create_only=True)
            except AlreadyExists:
                raise LockedError("another run took over the stale lock first",
                                  hint="wait for it to finish") from None
        self._confirm_ours()
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()

    def _confirm_ours(self) -> None:
        current = read_lock(self.store, self.key) or {}
        if current.get("token") != self.token:
            raise LockedError(f"lost the lock race to {describe_holder(current)}", hint="wait for it to finish")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl / 3)):
            try:
                self._confirm_ours()
                self.store.put_bytes(self.key, self._document(), create_only=False)
            except Exception as exc:  # any failure means we can no longer prove we hold it
                logger.error("lost the lock of %s: %s", self.store.describe(), exc,
                             extra=event(action="lock", state="lost"))
                self.lost.set()
                return

    def check(self) -> None:
        """Raise if the lock was lost while running (called between stages)."""
        if self.lost.is_set():
            raise LockedError("the lock was lost during the run (deleted or taken over)",
                              hint="nothing was committed; check for another run and start again")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        try:
            current = read_lock(self.store, self.key) or {}
            if current.get("token") == self.token:
                self.store.delete([self.key])
        except StorageError as exc:
            logger.warning("could not release the lock (it expires by itself): %s", exc)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
