"""One writer per storage prefix: a lock object created only if absent.

The lock holds who took it (host, pid, operation, start time) and when it
expires. While the run lasts, a thread refreshes the expiry every third of
the TTL after checking the lock is still ours; if it was lost (deleted,
taken over), the run is told and aborts instead of continuing unlocked. A
lock whose expiry has passed is stale (its holder died) and is taken over,
with a warning naming the old holder.

Every change of an existing lock is conditional on the ETag last seen: the
takeover replaces the stale lock only if it is still exactly the version that
was judged stale (S3 ``PUT If-Match``), a refresh only if the lock is still
the one this run wrote, and the release deletes it only then (``DELETE
If-Match``). Two runs that both find one stale lock therefore cannot both
take it: the second conditional write fails and that run exits 9.
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

from afbackup.errors import LockedError, NotFoundError, StorageError
from afbackup.log import event
from afbackup.manifest import LOCKS, iso, utcnow
from afbackup.storage.base import AlreadyExists, Conflict, ObjectStore

logger = logging.getLogger(__name__)

WRITER_LOCK = f"{LOCKS}writer.lock"


def describe_holder(doc: dict[str, Any]) -> str:
    return (f"{doc.get('operation', '?')} by {doc.get('host', '?')} pid {doc.get('pid', '?')} "
            f"since {doc.get('started_at', '?')} (expires {doc.get('expires_at', '?')})")


def read_lock(store: ObjectStore, key: str = WRITER_LOCK) -> dict[str, Any] | None:
    return read_lock_version(store, key)[0]


def read_lock_version(store: ObjectStore, key: str = WRITER_LOCK) -> tuple[dict[str, Any] | None, str]:
    """The lock's holder and the ETag of exactly that version (one read); (None, "") when free."""
    try:
        data, stored = store.get_object(key, limit=1 << 16)
    except NotFoundError:
        return None, ""
    except StorageError:
        return {"operation": "unknown", "expires_at": None}, ""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {"operation": "unknown", "expires_at": None}
    return doc, stored.etag


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
    aborts without committing. The delete is conditional on the ETag of the
    version shown: if it changed (refreshed or taken by another run) nothing is removed.
    """
    holder, etag = read_lock_version(store)
    if holder is None:
        return BrokenLock(None, False, False)
    stale = is_stale(holder, now)
    if not yes:
        return BrokenLock(holder, stale, False)
    if not stale and not force:
        raise LockedError(f"the lock is live: {describe_holder(holder)}",
                          hint="wait for the run to finish; if you know its holder is dead, add --force")
    changed = LockedError("the lock changed while breaking it (refreshed or taken by another run)",
                          hint="run `afbackup break-lock` again to see the current holder")
    if not etag:
        if read_lock(store) != holder:
            raise changed
        failures = store.delete([WRITER_LOCK])
        if failures:
            raise StorageError(f"could not remove the lock: {failures[0].code} {failures[0].message}")
    else:
        try:
            store.delete_if_match(WRITER_LOCK, etag)
        except Conflict:
            raise changed from None
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
        self._etag = ""  # the ETag of the version of the lock this run last wrote

    def _document(self) -> bytes:
        doc = {"operation": self.operation, "host": socket.gethostname(), "pid": os.getpid(),
               "started_at": iso(self._started), "expires_at": iso(self.clock() + dt.timedelta(seconds=self.ttl)),
               "token": self.token}
        return json.dumps(doc, indent=1).encode()

    def acquire(self) -> None:
        try:
            self._etag = self.store.put_bytes(self.key, self._document(), create_only=True).etag
        except AlreadyExists:
            self._take_over()
        self._confirm_ours()
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        """Replace a stale lock, conditional on the version judged stale (one winner)."""
        holder, etag = read_lock_version(self.store, self.key)
        if holder is None:  # released meanwhile: try to create it once more
            try:
                self._etag = self.store.put_bytes(self.key, self._document(), create_only=True).etag
                return
            except AlreadyExists:
                holder, etag = read_lock_version(self.store, self.key)
        holder = holder or {}
        if not is_stale(holder, self.clock()):
            raise LockedError(f"another run holds the lock of {self.store.describe()}: {describe_holder(holder)}",
                              hint="wait for it to finish; if its holder is dead, run `afbackup break-lock --yes`")
        if not etag:
            raise LockedError(f"the stale lock of {self.store.describe()} cannot be read back to take it over",
                              hint="check the storage, or run `afbackup break-lock --yes`")
        try:
            self._etag = self.store.put_bytes(self.key, self._document(), create_only=False, if_match=etag).etag
        except Conflict:
            raise LockedError("another run took over the stale lock first", hint="wait for it to finish") from None
        logger.warning("taking over a stale lock: %s", describe_holder(holder),
                       extra=event(action="lock", state="takeover"))

    def _confirm_ours(self) -> None:
        current = read_lock(self.store, self.key) or {}
        if current.get("token") != self.token:
            raise LockedError(f"lost the lock race to {describe_holder(current)}", hint="wait for it to finish")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl / 3)):
            try:
                self._refresh()
            except Exception as exc:  # any failure means we can no longer prove we hold it
                logger.error("lost the lock of %s: %s", self.store.describe(), exc,
                             extra=event(action="lock", state="lost"))
                self.lost.set()
                return

    def _refresh(self) -> None:
        """Extend the expiry, only if the lock is still the version this run wrote."""
        if self._etag:
            self._etag = self.store.put_bytes(self.key, self._document(), create_only=False,
                                              if_match=self._etag).etag
            return
        self._confirm_ours()  # a store that reported no ETag: check, then write
        self._etag = self.store.put_bytes(self.key, self._document(), create_only=False).etag

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
            if self._etag:
                self.store.delete_if_match(self.key, self._etag)
                return
            current = read_lock(self.store, self.key) or {}
            if current.get("token") == self.token:
                self.store.delete([self.key])
        except Conflict:
            logger.warning("did not release the lock of %s: it is no longer the one this run wrote (taken over "
                           "or removed)", self.store.describe())
        except StorageError as exc:
            logger.warning("could not release the lock (it expires by itself): %s", exc)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
