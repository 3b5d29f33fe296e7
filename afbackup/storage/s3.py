"""S3 (and S3-compatible) object store through boto3.

Streaming uploads use s3transfer's multipart upload from a non-seekable
reader: memory is about ``(concurrency + in-memory chunks) × part_size``, and
an exception from ``read()`` makes s3transfer abort the multipart upload.
Small create-only objects (manifests, locks) use ``put_object(IfNoneMatch="*")``; the lock's takeover,
refresh and release are conditional on its ETag (``IfMatch`` on PUT and DELETE).
botocore errors become ``StorageError`` here, and nowhere else.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from afbackup.config.model import StorageConfig
from afbackup.errors import AfbackupError, NotFoundError, StorageError
from afbackup.storage.base import AlreadyExists, Conflict, DeleteFailure, PendingUpload, Retention, StoredObject
from afbackup.storage.reader import ResumingReader
from afbackup.streams import Readable

logger = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def _describe_error(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code", "")), str(err.get("Message", "")) or str(exc)
    return type(exc).__name__, str(exc)


class S3Store:
    def __init__(self, cfg: StorageConfig, *, session: boto3.session.Session | None = None) -> None:
        """``session``: share one boto3 session between many stores (fleet status), so its
        service models load once; clients must then be created from one thread at a time."""
        bucket, _, prefix = cfg.url.removeprefix("s3://").partition("/")
        self.url, self.bucket, self.prefix = cfg.url, bucket, prefix.strip("/")
        self.cfg = cfg
        boto_config = BotoConfig(
            region_name=cfg.region or None,
            retries={"mode": "standard", "max_attempts": cfg.retries + 1},
            request_checksum_calculation=cfg.request_checksum_calculation,
            response_checksum_validation=cfg.response_checksum_validation,
            connect_timeout=10, read_timeout=120, max_pool_connections=cfg.upload_concurrency + 4,
        )
        self.client = (session or boto3.session.Session()).client("s3", endpoint_url=cfg.endpoint_url or None,
                                                                  config=boto_config)

    def describe(self) -> str:
        return self.url

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _error(self, exc: Exception, action: str, key: str = "") -> AfbackupError:
        code, message = _describe_error(exc)
        where = f"s3://{self.bucket}/{self._key(key)}" if key else self.url
        cls: type[AfbackupError] = NotFoundError if code in _NOT_FOUND else StorageError
        return cls(f"S3 {action} {where} failed: {code} {message}".strip(),
                   hint="check the bucket, endpoint, credentials and network", stage="storage")

    def _lock_args(self, retention: Retention | None) -> dict:
        if not retention or not retention.mode:
            return {}
        return {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": retention.until,
                "ChecksumAlgorithm": "CRC32"}

    def put_stream(self, key: str, reader: Readable, *, retention: Retention | None = None) -> StoredObject:
        transfer = TransferConfig(
            multipart_threshold=self.cfg.part_size, multipart_chunksize=self.cfg.part_size,
            max_concurrency=self.cfg.upload_concurrency, use_threads=True, preferred_transfer_client="classic",
        )
        # Not a constructor argument of boto3's TransferConfig, but honoured by s3transfer:
        # parts buffered ahead of the uploading threads (memory = this × part_size, plus in-flight parts).
        transfer.max_in_memory_upload_chunks = self.cfg.upload_concurrency
        try:
            self.client.upload_fileobj(reader, self.bucket, self._key(key),
                                       ExtraArgs=self._lock_args(retention) or None, Config=transfer)
        except AfbackupError:
            raise  # a producer's own failure, raised from read(): s3transfer has aborted the upload
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "upload to", key) from None
        stored = self.head(key)
        if stored is None:
            raise StorageError(f"uploaded {key} but it is not in the bucket", stage="storage")
        return stored

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = True,
                  retention: Retention | None = None, if_match: str = "") -> StoredObject:
        args = {"Bucket": self.bucket, "Key": self._key(key), "Body": data, **self._lock_args(retention)}
        if if_match:
            args["IfMatch"] = _quoted(if_match)
        elif create_only:
            args["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(**args)
        except ClientError as exc:
            code = _describe_error(exc)[0]
            if if_match and (code in _PRECONDITION or code in _NOT_FOUND):
                raise Conflict(f"{key} changed since it was read (ETag {if_match})", stage="storage") from None
            if code in _PRECONDITION:
                raise AlreadyExists(f"{key} already exists", stage="storage") from None
            raise self._error(exc, "write to", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "write to", key) from None
        return StoredObject(key, len(data), response.get("ETag", "").strip('"'), response.get("VersionId", ""))

    def get_bytes(self, key: str, *, limit: int = 64 << 20) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            data = body.read(limit + 1)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "read of", key) from None
        if len(data) > limit:
            raise StorageError(f"{key} is larger than {limit} bytes", stage="storage")
        return data

    def get_object(self, key: str, *, limit: int = 64 << 20) -> tuple[bytes, StoredObject]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read(limit + 1)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "read of", key) from None
        if len(data) > limit:
            raise StorageError(f"{key} is larger than {limit} bytes", stage="storage")
        return data, StoredObject(key, len(data), response.get("ETag", "").strip('"'),
                                  response.get("VersionId", "") or "", response.get("LastModified"))

    def delete_if_match(self, key: str, etag: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=_quoted(etag))
        except ClientError as exc:
            code = _describe_error(exc)[0]
            if code in _PRECONDITION or code in _NOT_FOUND:
                raise Conflict(f"{key} changed or is gone since it was read (ETag {etag})", stage="storage") from None
            raise self._error(exc, "conditional delete of", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "conditional delete of", key) from None

    def open_read(self, key: str, *, version_id: str = "") -> Readable:
        def fetch(offset: int, etag: str) -> tuple[Any, str]:
            args = {"Bucket": self.bucket, "Key": self._key(key)}
            if version_id:
                args["VersionId"] = version_id
            if offset:
                args["Range"] = f"bytes={offset}-"
            if etag:
                args["IfMatch"] = etag
            response = self.client.get_object(**args)
            return response["Body"], response.get("ETag", "")

        return ResumingReader(fetch, retries=self.cfg.retries, describe=f"s3://{self.bucket}/{self._key(key)}",
                              translate=lambda exc: self._error(exc, "read of", key))

    def head(self, key: str) -> StoredObject | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _describe_error(exc)[0] in _NOT_FOUND:
                return None
            raise self._error(exc, "HEAD of", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "HEAD of", key) from None
        return StoredObject(key, int(meta["ContentLength"]), meta.get("ETag", "").strip('"'),
                            meta.get("VersionId", ""), meta.get("LastModified"))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(self._rel(item["Key"]), int(item["Size"]), item.get("ETag", "").strip('"'),
                                       "", item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "listing of", prefix) from None

    def delete(self, keys: Sequence[str]) -> builtins.list[DeleteFailure]:
        failures: list[DeleteFailure] = []
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(key)} for key in keys[start:start + 1000]]
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "delete in") from None
            failures += [DeleteFailure(self._rel(err["Key"]), err.get("Code", ""), err.get("Message", ""))
                         for err in response.get("Errors", [])]
        return failures

    def pending_uploads(self, prefix: str) -> builtins.list[PendingUpload]:
        uploads: list[PendingUpload] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                uploads += [PendingUpload(self._rel(u["Key"]), u["UploadId"], u["Initiated"])
                            for u in page.get("Uploads", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "listing multipart uploads in") from None
        return uploads

    def abort_upload(self, upload: PendingUpload) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(upload.key), UploadId=upload.upload_id)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "abort of the multipart upload of", upload.key) from None

    def locked_until(self, key: str) -> Retention | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "HEAD of", key) from None
        until = meta.get("ObjectLockRetainUntilDate")
        if meta.get("ObjectLockMode") and until and until > dt.datetime.now(dt.UTC):
            return Retention(meta["ObjectLockMode"], until)
        return None


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'
