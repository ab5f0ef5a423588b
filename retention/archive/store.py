"""Where archives go: a folder (default ``MUTT_DATA_DIR/archive``) or an S3-compatible bucket.

``MUTT_ARCHIVE_URL`` (a static setting) names the store: a path, ``file:///path`` or
``s3://bucket/prefix``. For S3, ``MUTT_ARCHIVE_S3_ENDPOINT`` names a non-AWS server (MinIO, Ceph, ...)
and the credentials are the secrets ``ARCHIVE_S3_ACCESS_KEY_ID`` and ``ARCHIVE_S3_SECRET_ACCESS_KEY``
(core.secrets: Vault, files or environment); without them boto3's own chain applies (an instance role).

Every operation that cannot reach the store raises :class:`StoreUnavailable` naming the store, never a
credential, so that a run fails clearly before anything is dropped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from django.conf import settings

from core import secrets


class StoreUnavailable(RuntimeError):
    """The archive store cannot be reached or refused an operation."""


class ArchiveStore(Protocol):
    url: str  # what the inventory records (no credential in it)

    def check(self) -> None:
        """Raise StoreUnavailable unless the store can be written now."""

    def put_file(self, key: str, path: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def fetch(self, key: str, path: Path) -> None:
        """Copy the object ``key`` to the local file ``path``."""

    def keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (deletion is retried after a crash)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FolderStore:
    """A local (or mounted) folder. Files appear under their key only when complete (write, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"archive key {key!r} leaves the store")
        return path

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise StoreUnavailable(f"archive folder {self.root} is not writable: {exc.strerror}") from exc

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(path, partial)
            self._commit(partial, target)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {key} to {self.root}: {exc.strerror}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(data)
            self._commit(partial, target)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {key} to {self.root}: {exc.strerror}") from exc

    @staticmethod
    def _commit(partial: Path, target: Path) -> None:
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key} from {self.root}: {exc.strerror}") from exc

    def fetch(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key} from {self.root}: {exc.strerror}") from exc

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {key} from {self.root}: {exc.strerror}") from exc


class S3Store:
    """A bucket of any S3-compatible server, through boto3 (multipart uploads for large files)."""

    def __init__(self, bucket: str, prefix: str, *, endpoint: str | None, region: str | None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/") + (f" at {endpoint}" if endpoint else "")
        key_id = secrets.get_secret("ARCHIVE_S3_ACCESS_KEY_ID")
        secret = secrets.get_secret("ARCHIVE_S3_SECRET_ACCESS_KEY")
        credentials = {"aws_access_key_id": key_id, "aws_secret_access_key": secret} if key_id and secret else {}
        # Few, short retries: an unreachable store must fail the run in seconds, not hang the job.
        config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config, **credentials)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> StoreUnavailable:
        # botocore's messages name the bucket and the error code, never the credentials.
        return StoreUnavailable(f"cannot {action} {key or '(bucket)'} in {self.url}: {exc}")

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("reach", "", exc) from exc

    def put_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("read", key, exc) from exc

    def fetch(self, key: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("read", key, exc) from exc

    def keys(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                found.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(found)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("delete", key, exc) from exc


def get_store() -> ArchiveStore:
    """The store ``MUTT_ARCHIVE_URL`` names (read per use, so tests and restarts see a change)."""
    url = getattr(settings, "MUTT_ARCHIVE_URL", "") or ""
    if not url:
        return FolderStore(Path(settings.MUTT_DATA_DIR) / "archive")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"MUTT_ARCHIVE_URL {url!r} names no bucket (s3://bucket/prefix)")
        endpoint = getattr(settings, "MUTT_ARCHIVE_S3_ENDPOINT", "") or None
        region = getattr(settings, "MUTT_ARCHIVE_S3_REGION", "") or None
        return S3Store(parsed.netloc, parsed.path, endpoint=endpoint, region=region)
    if parsed.scheme in ("", "file"):
        return FolderStore(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"MUTT_ARCHIVE_URL {url!r}: the scheme must be s3:// or file:// (or a plain path)")
