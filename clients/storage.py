"""Where bulk scoring reads and writes: a local path, or an object storage URI, through pyarrow's filesystems.

`locate("s3://lake/in/")`, `locate("gs://...")`, `locate("abfs://container@account.dfs.core.windows.net/...")`
or a local path give a `Location`: one file or folder on one filesystem, with the few operations
`score` needs (list, size, open for streaming reads, write whole, delete). Local writes go through
`tritonkit.atomic` (a temporary name, then a rename); an object store has no rename, so an object is
written by one PUT (or a multipart upload completed on close): it appears whole or not at all.

Credentials come from the environment and the usual files, never from the URI, and are never printed:
S3 from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_PROFILE` and
`~/.aws/*`, instance and web-identity roles; S3-compatible stores (MinIO, Ceph RGW) from
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (read here: pyarrow's S3 client ignores them), the region
from `AWS_REGION` / `AWS_DEFAULT_REGION`. GCS: `GOOGLE_APPLICATION_CREDENTIALS` or the metadata server.
Azure: `AZURE_STORAGE_ACCOUNT_KEY` when set, else Azure's default credential chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from tritonkit import atomic
from tritonkit.errors import UsageError

SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "abfs": "abfs", "abfss": "abfs"}


def is_uri(text: str | Path) -> bool:
    return isinstance(text, str) and "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class Location:
    """One file or folder: `fs` and its `path` ("bucket/key" on object stores, absolute locally).

    `uri` shows it to people: `shown` + the path after `hidden` (abfs paths start with the container,
    which its URI names before the account).
    """

    fs: pafs.FileSystem
    path: str
    shown: str = ""
    hidden: str = ""

    @property
    def uri(self) -> str:
        return self.shown + self.path[len(self.hidden) :]

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rpartition("/")[2]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def __str__(self) -> str:
        return self.uri

    def _at(self, path: str) -> Location:
        return Location(self.fs, path, self.shown, self.hidden)

    def sibling(self, name: str) -> Location:
        parent = self.path.rstrip("/").rpartition("/")[0]
        return self._at(f"{parent}/{name}")

    def child(self, name: str) -> Location:
        return self._at(f"{self.path.rstrip('/')}/{name}")

    @property
    def parent(self) -> Location:
        return self._at(self.path.rstrip("/").rpartition("/")[0])

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def size(self) -> int:
        return self.info().size or 0

    def files(self) -> list[Location]:
        """Every file below this folder, sorted by path."""
        found = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return sorted((self._at(i.path) for i in found if i.type == pafs.FileType.File), key=lambda loc: loc.path)

    def open_input_file(self):
        """Random access (Parquet footers and row groups: ranged reads on object stores)."""
        return self.fs.open_input_file(self.path)

    def open_input_stream(self):
        """Sequential reads, streamed (CSV, JSON Lines)."""
        return self.fs.open_input_stream(self.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def write_bytes(self, data: bytes | memoryview) -> None:
        """Whole or not at all: a rename into place locally, one PUT on an object store."""
        if self.local:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(Path(self.path), data)
            return
        with self.fs.open_output_stream(self.path) as out:  # a failed upload is not completed on close
            out.write(data)

    def upload(self, local_file: Path) -> None:
        """Copies a finished local file here; the object appears when its (multipart) upload completes."""
        pafs.copy_files(str(local_file), self.path, pafs.LocalFileSystem(), self.fs)

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    def delete_dir(self) -> None:
        try:
            self.fs.delete_dir(self.path)
        except FileNotFoundError:
            pass

    def mkdir(self) -> None:
        if self.local:
            Path(self.path).mkdir(parents=True, exist_ok=True)


def locate(where: str | Path | Location) -> Location:
    """A local path (or file:// URI) or an s3://, gs://, abfs:// URI as a Location."""
    if isinstance(where, Location):
        return where
    text = str(where)
    if not is_uri(text):
        return Location(pafs.LocalFileSystem(), os.path.abspath(text.removeprefix("file://")))
    parts = urlsplit(text)
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise UsageError(
            f"{parts.scheme}:// is not a storage the kit reads or writes; expected a local path or one of "
            f"{', '.join(s + '://' for s in SCHEMES)}"
        )
    if scheme in ("s3", "gs") and ("@" in parts.netloc or parts.query):
        raise UsageError(
            f"{scheme}://{parts.hostname or ''}/...: credentials and options do not go in the URI; "
            "give them in the environment (see the README, Object storage)"
        )
    if not parts.netloc:
        raise UsageError(f"{text!r} names no bucket or container")
    path = parts.path.rstrip("/")
    if scheme == "abfs":  # abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH: the filesystem's path is CONTAINER/PATH
        container = parts.username or parts.netloc
        return Location(_filesystem(scheme, parts), f"{container}{path}", f"{parts.scheme}://{parts.netloc}", container)
    return Location(_filesystem(scheme, parts), f"{parts.netloc}{path}", f"{parts.scheme}://")


def _filesystem(scheme: str, parts) -> pafs.FileSystem:
    if scheme == "s3":
        return s3_filesystem()
    if scheme == "gs":
        return pafs.GcsFileSystem()
    account = parts.hostname.split(".")[0] if parts.hostname and "." in parts.hostname else None
    account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", account)
    if not account:
        raise UsageError("abfs:// needs the storage account: abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH")
    key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
    return pafs.AzureFileSystem(account, account_key=key) if key else pafs.AzureFileSystem(account)


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 client with the endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (which it ignores)."""
    options: dict = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**options)
