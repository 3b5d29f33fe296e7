"""A download stream that survives a dropped connection by resuming at its offset.

The object is pinned by ETag (``If-Match``) across resumptions, so a resumed
read can never splice two different versions together. Every resumption is
logged as a warning: a transient error that succeeded on retry must be
visible, not silent (RELIABILITY B.11).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from afbackup.errors import AfbackupError, StorageError
from afbackup.log import event

logger = logging.getLogger(__name__)

Fetch = Callable[[int, str], tuple[Any, str]]  # (offset, etag) -> (body: a botocore stream, etag)


class ResumingReader:
    def __init__(self, fetch: Fetch, *, retries: int, describe: str,
                 translate: Callable[[Exception], AfbackupError],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._fetch, self._retries, self._describe = fetch, retries, describe
        self._translate, self._sleep = translate, sleep
        self.offset = 0
        self.resumptions = 0
        self._etag = ""
        self._body: Any = None
        self._open()

    def _open(self) -> None:
        try:
            self._body, etag = self._fetch(self.offset, self._etag)
        except AfbackupError:
            raise
        except Exception as exc:  # botocore/urllib3 errors: classified by the store
            raise self._translate(exc) from None
        self._etag = self._etag or etag

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while True:
            try:
                data = self._body.read(size if size >= 0 else None)
            except (OSError, ValueError) as exc:  # connection reset, timeouts, incomplete reads
                self._resume(exc)
                continue
            except Exception as exc:
                if type(exc).__module__.startswith(("botocore", "urllib3")):
                    self._resume(exc)
                    continue
                raise
            self.offset += len(data)
            return data

    def _resume(self, exc: Exception) -> None:
        if self.resumptions >= self._retries:
            raise StorageError(f"reading {self._describe} failed at byte {self.offset}: {exc}",
                               hint="check the network and run again", stage="storage") from None
        self.resumptions += 1
        delay = min(8.0, 0.2 * 2 ** self.resumptions) * random.uniform(0.5, 1.0)
        logger.warning("read of %s interrupted at byte %d (%s); resuming", self._describe, self.offset,
                       type(exc).__name__, extra=event(stage="download", state="retry", attempt=self.resumptions))
        self._sleep(delay)
        self._close_body()
        self._open()

    def _close_body(self) -> None:
        try:
            self._body.close()
        except Exception:  # closing a broken connection may fail again; it is discarded anyway
            pass

    def close(self) -> None:
        self._close_body()
