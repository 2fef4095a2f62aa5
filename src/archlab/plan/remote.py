"""A run store on any fsspec filesystem: ``--runs-dir memory://…``, ``file://…``, ``s3://…``, ``gs://…``.

Training writes through ``RunDir`` into a local staging copy of the store, exactly as for a local store,
so checkpoints are written atomically on a local disk first. The staging copy is mirrored to the remote:

- ``pull``: before a run starts, its remote folder (status, metrics, checkpoints) comes down, so a run
  interrupted on one machine resumes on another from its last uploaded checkpoint; ``archlab plan`` and
  ``archlab report`` pull the small files of every run (not checkpoints or exported models);
- ``push``: after each new checkpoint, when the run ends (done, failed or interrupted) and after the
  report, changed files go up; checkpoints pruned locally (``save_total_limit``) are deleted remotely.

Uploads are atomic where the filesystem allows: object stores (s3, gs, azure, memory) make an object
visible only once it is whole; filesystems with rename (file, sftp, hdfs) get a temporary name and a
move. On others a note says that readers may see a file half uploaded. The run lock is local to this
machine's staging copy: one executor per remote store at a time (or Ray, which runs each run once).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from archlab.errors import ArchlabError

WHOLE_OBJECTS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oss", "r2"}
RENAMES = {"file", "local", "sftp", "ssh", "hdfs", "webhdfs", "smb"}
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "abfss": "adlfs", "sftp": "paramiko", "ssh": "paramiko", "hdfs": "pyarrow"}
BULKY = ("checkpoints", "model")  # pulled only by the executor that trains the run


def protocol_of(url: str) -> str | None:
    """'s3' for 's3://bucket/x', None for a plain path ('runs', '/data/runs', 'C:\\runs')."""
    head, sep, _ = str(url).partition("://")
    return head.lower() if sep and head.isidentifier() else None


def local_root(url: str | Path) -> Path | None:
    """A plain path or ``file://`` URL as a local Path (the store works on it directly); None for a remote."""
    text = str(url)
    proto = protocol_of(text)
    if proto is None:
        return Path(text)
    if proto in ("file", "local"):
        return Path(text.partition("://")[2] or "/")
    return None


def staging_root(url: str) -> Path:
    base = Path(os.environ.get("ARCHLAB_STAGING") or Path(os.environ.get("ARCHLAB_CACHE", Path.home() / ".cache" /
                                                                        "archlab")) / "staging")
    return base / f"{protocol_of(url)}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def filesystem(url: str):
    """The fsspec filesystem of ``url``; one line naming the package when its implementation is missing."""
    import fsspec

    proto = protocol_of(url)
    try:
        return fsspec.filesystem(proto)
    except ImportError:
        package = PACKAGES.get(proto, f"the fsspec implementation of {proto}://")
        raise ArchlabError(f"--runs-dir {url}: {proto}:// needs {package}, which is not installed: pip install "
                           f"{package}") from None
    except ValueError:
        raise ArchlabError(f"--runs-dir {url}: fsspec knows no filesystem '{proto}://'; use a local path, "
                           f"file://, memory://, s3:// or gs://") from None


class Mirror:
    """The remote side of a staged run store: ``remote`` (a URL) mirrors ``local`` (the staging folder)."""

    def __init__(self, url: str, local: Path):
        self.url, self.local = url.rstrip("/"), Path(local)
        self.fs = filesystem(url)
        self.proto = protocol_of(url)
        self.atomic = "whole" if self.proto in WHOLE_OBJECTS else "rename" if self.proto in RENAMES else None
        if self.atomic is None:
            warnings.warn(f"{self.proto}:// has neither whole-object uploads nor rename: a reader may see a file of "
                          f"{self.url} half uploaded (the local staging copy in {self.local} is always whole)",
                          stacklevel=2)
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last pushed

    def remote(self, *parts: str) -> str:
        return "/".join([self.url, *[p.strip("/") for p in parts if p]])

    # ------------------------------------------------------------------------------------------ pull
    def pull(self, relative: str, bulky: bool = True) -> int:
        """Download ``relative`` (a run folder) into staging; returns the number of files fetched.

        Remote files overwrite older local ones except while this machine holds the newer copy (a file
        it wrote and uploaded itself keeps its local version)."""
        base = self.remote(relative)
        try:
            found = self.fs.find(base, detail=True)
        except (FileNotFoundError, OSError):
            return 0
        fetched = 0
        for path, info in found.items():
            rel = path[len(self.fs._strip_protocol(base)):].lstrip("/")
            if rel.split("/", 1)[0] in BULKY and not bulky:
                continue
            if Path(rel).name.startswith("."):  # temporary uploads, locks
                continue
            target = self.local / relative / rel
            key = f"{relative}/{rel}"
            if target.exists() and key in self._uploaded:
                continue
            if target.exists() and info.get("size") == target.stat().st_size and rel.split("/", 1)[0] in BULKY:
                continue  # checkpoints and exported models do not change under one name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.pull")
            self.fs.get_file(path, str(tmp))
            os.replace(tmp, target)
            fetched += 1
        return fetched

    # ------------------------------------------------------------------------------------------ push
    def push(self, relative: str) -> int:
        """Upload what changed under staging ``relative`` (a folder or a file); delete remote checkpoints
        pruned locally."""
        folder = self.local / relative
        if not folder.exists():
            return 0
        sent = 0
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(self.local).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts):  # locks, temporary files and saves
                continue
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._uploaded.get(rel) == stamp:
                continue
            self._put(path, self.remote(rel))
            self._uploaded[rel] = stamp
            sent += 1
        if folder.is_dir():
            self._prune(relative)
        return sent

    def _put(self, path: Path, target: str) -> None:
        parent = target.rsplit("/", 1)[0]
        if self.atomic != "whole":
            self.fs.makedirs(parent, exist_ok=True)
        if self.atomic == "rename":
            tmp = f"{parent}/.{target.rsplit('/', 1)[1]}.{os.getpid()}.upload"
            self.fs.put_file(str(path), tmp)
            self.fs.mv(tmp, target)
        else:
            self.fs.put_file(str(path), target)

    def _prune(self, relative: str) -> None:
        local_ckpts = self.local / relative / "checkpoints"
        remote_ckpts = self.remote(relative, "checkpoints")
        try:
            names = [p.rstrip("/").rsplit("/", 1)[1] for p in self.fs.ls(remote_ckpts, detail=False)]
        except (FileNotFoundError, OSError):
            return
        for name in names:
            if name.startswith("step-") and not (local_ckpts / name).exists():
                self.fs.rm(f"{remote_ckpts}/{name}", recursive=True)
                for key in [k for k in self._uploaded if k.startswith(f"{relative}/checkpoints/{name}/")]:
                    del self._uploaded[key]

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "staging": str(self.local), "atomic": self.atomic}
