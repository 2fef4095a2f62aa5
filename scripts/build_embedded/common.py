"""What every source builder shares: paths, the seeded split, reproducible gzip, registry downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "src" / "archlab" / "data" / "embedded"
DEFAULT_WORKDIR = REPO_ROOT / ".cache" / "build_embedded"

SEED = 0
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
SPLITS = ("train", "validation", "test")

# Outputs must never name a package registry host.  The hosts are assembled from
# parts so that this file does not contain them either.
FORBIDDEN_HOSTS = tuple(
    ".".join(parts)
    for parts in (
        ("pypi", "org"),
        ("pypi", "python", "org"),
        ("files", "pythonhosted", "org"),
        ("pythonhosted", "org"),
        ("deb", "debian", "org"),
        ("ftp", "debian", "org"),
        ("security", "debian", "org"),
        ("registry", "npmjs", "org"),
        ("huggingface", "co"),
    )
)


class BuildError(RuntimeError):
    """A fatal, explained build problem (printed as one clear error line)."""


def log(msg: str) -> None:
    print(f"[build_embedded] {msg}", flush=True)


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"required tool '{name}' was not found on PATH; {hint}")
    return path


def require_pip() -> None:
    try:
        import pip  # noqa: F401
    except ImportError as exc:
        raise BuildError(
            f"'pip' is not available for {sys.executable}; install it (python -m ensurepip) and rerun"
        ) from exc


def run(cmd: list[str], cwd: Path | None = None) -> str:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return proc.stdout


def pip_download(spec: str, dest: Path, pattern: str, extra: list[str] | None = None) -> Path:
    """``pip download --no-deps SPEC`` into DEST (cached: reused when present)."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(pattern))
    if not found:
        require_pip()
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
                str(dest),
                *(extra or []),
                spec,
            ]
        )
        found = sorted(dest.glob(pattern))
    if not found:
        raise BuildError(f"pip download {spec} produced no file matching {pattern} in {dest}")
    return found[-1]


def apt_download(package: str, dest: Path) -> Path:
    """``apt-get download PACKAGE`` into DEST (cached), without installing it."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if not found:
        apt = require_tool("apt-get", "this step needs a Debian/Ubuntu machine with apt-get")
        try:
            run([apt, "download", package], cwd=dest)
        except BuildError:
            log("apt-get download failed; running 'apt-get update' once and retrying")
            run([apt, "update"])
            run([apt, "download", package], cwd=dest)
        found = sorted(dest.glob(f"{package}_*.deb"))
    if not found:
        raise BuildError(f"apt-get download {package} produced no .deb in {dest}")
    return found[-1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_bytes(data: bytes) -> bytes:
    """Byte-reproducible gzip: no file name, mtime 0, fixed level."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def split_documents(
    docs: list[dict], key: str, size_of=None, min_heldout_bytes: int = 0
) -> dict[str, list[dict]]:
    """Seeded (seed 0), document-level ~90/5/5 split.

    Documents are sorted by ``key`` and shuffled with ``random.Random(SEED)``;
    validation then takes documents from the front of the shuffled list until it
    has ``round(5% of n)`` documents (at least 1) *and* at least
    ``min_heldout_bytes`` bytes; test takes the next ones by the same rule; the
    rest is train.  Each split is returned sorted by ``key``.
    """
    ordered = sorted(docs, key=lambda d: d[key])
    if len({d[key] for d in ordered}) != len(ordered):
        raise BuildError(f"duplicate document keys in split on '{key}'")
    rng = random.Random(SEED)
    rng.shuffle(ordered)
    size_of = size_of or (lambda d: 0)
    out: dict[str, list[dict]] = {}
    pos = 0
    for split, frac in (("validation", VAL_FRACTION), ("test", TEST_FRACTION)):
        want = max(1, round(frac * len(ordered)))
        taken: list[dict] = []
        while pos < len(ordered) and (
            len(taken) < want or sum(size_of(d) for d in taken) < min_heldout_bytes
        ):
            taken.append(ordered[pos])
            pos += 1
        out[split] = taken
    out["train"] = ordered[pos:]
    if not out["train"]:
        raise BuildError("split left no training documents")
    return {s: sorted(out[s], key=lambda d: d[key]) for s in SPLITS}


def forbidden_host_in(text: str) -> str | None:
    low = text.lower()
    for host in FORBIDDEN_HOSTS:
        if host in low:
            return host
    return None


def write_jsonl_gz(out: Path, rel: str, records: list[dict]) -> dict:
    """Records as UTF-8 JSON lines, gzipped reproducibly; returns the manifest entry."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if forbidden_host_in(data.decode("utf-8")):
        raise BuildError(f"{rel} would contain a registry host name; refusing to write it")
    gz = gzip_bytes(data)
    write_if_changed(out / rel, gz)
    return {"file": rel, "records": len(records), "bytes": len(data), "compressed_bytes": len(gz),
            "sha256": sha256(gz)}


def npm_pack(spec: str, dest: Path) -> Path:
    """``npm pack SPEC`` into DEST (cached), without installing it."""
    dest.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.rpartition("@")
    found = sorted(dest.glob(f"{name}-{version}.tgz"))
    if not found:
        npm = require_tool("npm", "this step needs npm (Debian package 'npm') for 'npm pack'")
        run([npm, "pack", spec, "--silent"], cwd=dest)
        found = sorted(dest.glob(f"{name}-{version}.tgz"))
    if not found:
        raise BuildError(f"npm pack {spec} produced no archive in {dest}")
    return found[0]


SPDX_LIST_NPM_PIN = "spdx-license-list@6.12.0"  # the SPDX licence texts (CC0-1.0)


def spdx_licence_text(spdx_id: str, workdir: Path) -> str:
    """The full text of an SPDX licence, for a source whose package does not ship it."""
    archive = npm_pack(SPDX_LIST_NPM_PIN, workdir / "npm")
    with tarfile.open(archive) as tf:
        member = tf.extractfile(f"package/licenses/{spdx_id}.json")
        if member is None:
            raise BuildError(f"{archive.name} has no licence text for {spdx_id}")
        return json.loads(member.read().decode("utf-8"))["licenseText"]
