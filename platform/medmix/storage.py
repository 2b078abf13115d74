"""Where medmix reads and writes: local paths and `s3://` URIs through one layer (pyarrow.fs).

    from medmix.storage import location
    loc = location("s3://bucket/medmix-data")      # or "medmix-data", "/mnt/nfs/data"
    loc.join("manifest.json").write_text(text)     # one PUT on S3; temp file + rename locally
    with loc.join("train", "part-0.parquet").open_input() as f: ...

A local path keeps meaning what it always did: it is made absolute (workers may run in
another directory) and written through a temporary name and a rename, so a reader never sees
half a file. Object stores have no rename; there an object appears whole when its single PUT
completes, so the same call is atomic per key, and the shard store's other rule — write-once
keys, the manifest last, readers trust only what a committed manifest lists — does the rest.

S3 settings come from the standard AWS variables: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
(or a profile), `AWS_DEFAULT_REGION`/`AWS_REGION`, and `AWS_ENDPOINT_URL` (or
`AWS_ENDPOINT_URL_S3`) for an S3-compatible server such as MinIO, Ceph or moto. They are
read from the environment of every process, so a job carries them in its runtime_env.
`check_reachable` fails fast, in one line naming the URI, when the endpoint cannot be reached,
the credentials are refused or the bucket does not exist.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pyarrow.fs as pafs

SCHEMES = ("s3",)


def _pafs() -> ModuleType:
    """pyarrow.fs, imported on first use: it loads in ~0.2 s, and `medmix --help` and the
    config-only commands import this module without touching storage."""
    import pyarrow.fs
    return pyarrow.fs


class StorageError(RuntimeError):
    """A storage URI is malformed, unreachable, refused or missing; the message names it."""


def is_uri(path: str | os.PathLike) -> bool:
    """True for `scheme://…` (object storage); False for a local path."""
    return "://" in str(path)


@functools.lru_cache(maxsize=16)
def _s3(endpoint: str, scheme: str, region: str, _credentials: tuple) -> pafs.S3FileSystem:
    """One S3 client per (endpoint, scheme, region, credentials) in a process; few retries and
    short timeouts, so a wrong endpoint fails in seconds rather than minutes."""
    kwargs: dict = {"connect_timeout": 5.0, "request_timeout": 60.0,
                    "retry_strategy": _pafs().AwsStandardS3RetryStrategy(max_attempts=3)}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
    if scheme:
        kwargs["scheme"] = scheme
    if region:
        kwargs["region"] = region
    return _pafs().S3FileSystem(**kwargs)


def _env_endpoint() -> tuple[str, str]:
    """(host[:port][/path], scheme) from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; ('', '') if unset."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if not url:
        return "", ""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc + parts.path.rstrip("/"), parts.scheme


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem: `fs` and its `path` there, and the `uri` a user
    would write for it (an absolute local path, or `s3://bucket/key`)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    # -- naming ------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, _pafs().LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def join(self, *parts: str) -> Location:
        rel = posixpath.join(*(str(p).strip("/") for p in parts if str(p)))
        if not rel:
            return self
        sep = "" if self.uri.endswith("/") else "/"
        return Location(self.fs, posixpath.join(self.path, rel), f"{self.uri}{sep}{rel}")

    @property
    def parent(self) -> Location:
        path, uri = posixpath.dirname(self.path.rstrip("/")), self.uri.rstrip("/").rsplit("/", 1)[0]
        return Location(self.fs, path, uri)

    def with_name(self, name: str) -> Location:
        return self.parent.join(name)

    def relative_to(self, root: Location) -> str:
        return posixpath.relpath(self.path, root.path)

    def local_path(self) -> Path:
        """The local filesystem path; a clear error for object storage."""
        if not self.is_local:
            raise StorageError(f"{self.uri}: this step needs a local path, not object storage")
        return Path(self.path)

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        """Local Locations pass wherever a path does (open(), Path(), pyarrow readers)."""
        return str(self.local_path())

    # -- inspecting --------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as exc:
            raise _explain(self.uri, exc) from exc

    def exists(self) -> bool:
        return self.info().type != _pafs().FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == _pafs().FileType.File

    def is_dir(self) -> bool:
        return self.info().type == _pafs().FileType.Directory

    def size(self) -> int:
        info = self.info()
        if info.type != _pafs().FileType.File:
            raise StorageError(f"{self.uri}: not a file")
        return int(info.size)

    def _infos(self, recursive: bool) -> list[pafs.FileInfo]:
        try:
            return self.fs.get_file_info(_pafs().FileSelector(self.path, allow_not_found=True,
                                                              recursive=recursive))
        except OSError as exc:
            raise _explain(self.uri, exc) from exc

    def children(self, recursive: bool = False) -> list[Location]:
        """The files and folders under this folder (none when it does not exist), sorted."""
        out = [self.join(posixpath.relpath(i.path, self.path)) for i in self._infos(recursive)]
        return sorted(out, key=lambda loc: loc.path)

    def files(self, recursive: bool = True) -> list[Location]:
        """The files under this folder (on object storage: one listing, no call per object)."""
        file = _pafs().FileType.File
        out = [self.join(posixpath.relpath(i.path, self.path)) for i in self._infos(recursive) if i.type == file]
        return sorted(out, key=lambda loc: loc.path)

    # -- reading -----------------------------------------------------------------------------
    def open_input(self):
        """A random-access file (Parquet reads only the byte ranges it needs)."""
        try:
            return self.fs.open_input_file(self.path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{self.uri}: no such file") from exc
        except OSError as exc:
            raise _explain(self.uri, exc) from exc

    def read_bytes(self) -> bytes:
        with self.open_input() as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def iter_chunks(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        with self.open_input() as f:
            while block := f.read(chunk):
                yield block

    def sha256(self) -> str:
        h = hashlib.sha256()
        for block in self.iter_chunks():
            h.update(block)
        return h.hexdigest()

    # -- writing -----------------------------------------------------------------------------
    def mkdirs(self) -> None:
        """Create the folder (locally; object stores have no folders, so nothing to do)."""
        if self.is_local:
            Path(self.path).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, data: bytes) -> None:
        """Write the whole object so that no reader ever sees part of it."""
        if self.is_local:
            path = Path(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return
        try:
            with self.fs.open_output_stream(self.path) as out:  # one PUT: the key appears whole
                out.write(data)
        except OSError as exc:
            raise _explain(self.uri, exc) from exc

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def delete(self, missing_ok: bool = True) -> None:
        """Remove the file or folder; a missing one is fine unless `missing_ok` is False."""
        kind = self.info().type
        if kind == _pafs().FileType.NotFound:
            if not missing_ok:
                raise FileNotFoundError(f"{self.uri}: no such file")
            return
        try:
            if kind == _pafs().FileType.Directory:
                self.fs.delete_dir(self.path)
            else:
                self.fs.delete_file(self.path)
        except OSError as exc:
            raise _explain(self.uri, exc) from exc

def location(path_or_uri: str | os.PathLike | Location) -> Location:
    """The Location for a local path (made absolute) or an `s3://bucket/key` URI."""
    if isinstance(path_or_uri, Location):
        return path_or_uri
    text = str(path_or_uri)
    if not is_uri(text):
        path = Path(text).expanduser().resolve()
        return Location(_pafs().LocalFileSystem(), path.as_posix(), str(path))
    parts = urlsplit(text)
    if parts.scheme == "file":
        return location(parts.path)
    if parts.scheme not in SCHEMES:
        raise StorageError(f"{text}: unsupported storage scheme {parts.scheme!r}; use a local path "
                           f"or s3://bucket/key (S3 and S3-compatible servers)")
    if not parts.netloc:
        raise StorageError(f"{text}: no bucket in the URI; write s3://bucket/key")
    if parts.query or parts.fragment:
        raise StorageError(f"{text}: an S3 URI takes no ?query or #fragment; name a non-AWS "
                           f"endpoint with AWS_ENDPOINT_URL (e.g. http://127.0.0.1:9000)")
    endpoint, scheme = _env_endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    key = parts.path.strip("/")
    path = f"{parts.netloc}/{key}" if key else parts.netloc
    base = f"s3://{path}"
    credentials = tuple(os.environ.get(k, "") for k in
                        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"))
    return Location(_s3(endpoint, scheme, region, credentials), path, base)


def normalize(path_or_uri: str | os.PathLike) -> str:
    """A path or URI as every process should see it: local paths absolute, URIs unchanged."""
    text = str(path_or_uri)
    return text.rstrip("/") if is_uri(text) else str(Path(text).expanduser().resolve())


def cache_root() -> Path:
    """Where this process keeps local copies of what lives on object storage:
    `$MEDMIX_CACHE_DIR`, else `$XDG_CACHE_HOME/medmix`, else `~/.cache/medmix`."""
    explicit = os.environ.get("MEDMIX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "medmix"


def local_dir(root: str | os.PathLike, *parts: str) -> Path:
    """A local folder for files derived from `root` (downloaded registry versions, exports made
    for serving): under `root` itself when it is a local path, else in the cache
    (`cache_root()/s3/<bucket>/<key>/...`), never in the current directory — a job whose every
    path is a URI leaves its working directory as it found it."""
    text = str(root)
    if not is_uri(text) or urlsplit(text).scheme == "file":
        return Path(location(text).path).joinpath(*parts)
    split = urlsplit(text)
    return cache_root().joinpath(split.scheme, split.netloc, *split.path.strip("/").split("/"), *parts)


def _endpoint() -> str:
    """The S3 endpoint this process talks to, for error messages."""
    endpoint, scheme = _env_endpoint()
    return f"{scheme or 'https'}://{endpoint}" if endpoint else "AWS's default S3 endpoint"


def _explain(uri: str, exc: OSError) -> StorageError:
    """One line saying what went wrong with `uri` and what to check."""
    text = str(exc)
    low = text.lower()
    if "network_connection" in low or "could not connect" in low or "couldn't connect" in low \
            or "timed out" in low or "resolve host" in low:
        return StorageError(f"{uri}: cannot reach the S3 endpoint {_endpoint()} "
                            f"(check AWS_ENDPOINT_URL and that the server is up): {_first_line(text)}")
    if "access_denied" in low or "accessdenied" in low or "invalidaccesskeyid" in low \
            or "signaturedoesnotmatch" in low or "403" in low or "forbidden" in low:
        return StorageError(f"{uri}: the S3 endpoint {_endpoint()} refused the credentials "
                            f"(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile, and "
                            f"the bucket policy): {_first_line(text)}")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return StorageError(f"{uri}: the bucket does not exist at {_endpoint()} "
                            f"(create it, or fix the bucket name): {_first_line(text)}")
    return StorageError(f"{uri}: {_first_line(text)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def check_reachable(path_or_uri: str | os.PathLike) -> Location:
    """Fail fast, before any work starts, when `path_or_uri` cannot be used: an unreachable
    endpoint, refused credentials or a missing bucket each raise one StorageError naming it.
    Local paths always pass (their folders are created on first write)."""
    loc = location(path_or_uri)
    if loc.is_local:
        return loc
    bucket = loc.path.split("/", 1)[0]
    try:
        info = loc.fs.get_file_info(bucket)
    except OSError as exc:
        raise _explain(loc.uri, exc) from exc
    if info.type == _pafs().FileType.NotFound:
        raise StorageError(f"{loc.uri}: the bucket {bucket!r} does not exist at {_endpoint()} "
                           f"(create it, or fix the bucket name)")
    loc.info()  # the key itself: a bucket we may see but not read fails here
    return loc


@contextlib.contextmanager
def local_copy(path_or_uri: str | os.PathLike | Location) -> Iterator[Path]:
    """A local path holding `path_or_uri`'s file or folder: the path itself when it is local,
    else a download into a temporary folder that is removed on exit (DCP, safetensors and
    transformers read local files)."""
    loc = location(path_or_uri)
    if loc.is_local:
        yield loc.local_path()
        return
    scratch = Path(tempfile.mkdtemp(prefix="medmix-download-"))
    try:
        target = scratch / (loc.name or "object")
        download(loc, target)
        yield target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def upload(src: str | os.PathLike, dest: Location, *, last: tuple[str, ...] = ()) -> None:
    """Copy the local folder `src` to `dest`, one write-once object per file, the files named
    in `last` (relative paths) after all others: a reader that checks for those sees either
    the whole folder or none of it (object stores have no rename to commit with)."""
    root = Path(src)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for name in [n for n in names if n not in last] + [n for n in last if n in names]:
        dest.join(name).write_bytes((root / name).read_bytes())


def download(src: Location, dest: str | os.PathLike) -> Path:
    """Copy the file or folder `src` to the local path `dest`."""
    dest = Path(dest)
    info = src.info()
    if info.type == _pafs().FileType.NotFound:
        raise FileNotFoundError(f"{src.uri}: no such file or folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if info.type == _pafs().FileType.File:
            dest.write_bytes(src.read_bytes())
        else:
            dest.mkdir(parents=True, exist_ok=True)
            _pafs().copy_files(src.path, str(dest), source_filesystem=src.fs,
                               destination_filesystem=_pafs().LocalFileSystem())
    except OSError as exc:
        raise _explain(src.uri, exc) from exc
    return dest

