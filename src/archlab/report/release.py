"""``archlab release RUN [--out DIR]``: one folder someone else can trust and load, and ``--verify DIR``.

The bundle holds the model (the exported ``model/``, or the weights of the last verified checkpoint for runs
that export none), the resolved config, the metrics log, the eval JSONs (and their per-item files), the
samples, env and status, a README with the headline table (the generated model card), and
``MANIFEST.sha256``: one ``<sha256>  <path>`` line per file, which ``--verify`` recomputes.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from archlab.errors import ArchlabError, first_line
from archlab.files import atomic_write, jsonl_problem
from archlab.plan.hub import model_card
from archlab.rundir import RunDir

MANIFEST = "MANIFEST.sha256"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def damage(path: Path) -> str | None:
    """Why a JSON, JSON-lines, YAML or safetensors file does not parse (None when it does, or is of another kind):
    a checksum only says a file is what was bundled, and a run killed mid-write can leave a truncated one."""
    import json

    import yaml

    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":  # a last line cut by a kill mid-append is skipped by readers: not damage
            return jsonl_problem(path, cut_tail=True)
        elif path.suffix in (".yaml", ".yml"):
            yaml.safe_load(path.read_text(encoding="utf-8"))
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt"):  # refuses a header whose tensors the file does not cover
                pass
    except Exception as exc:  # JSON/YAML/UTF-8 errors, and safetensors' SafetensorError (no stable import path)
        return first_line(exc)
    return None


def build_release(run_dir: Path, out: Path) -> Path:
    """Write the bundle of a finished run to ``out`` (which must not exist or be empty); returns ``out``."""
    run = RunDir(run_dir)
    if not run.has_config():
        raise ArchlabError(f"{run_dir} is not a run folder (no config.yaml); pass runs/<plan>/<run-id>")
    status = run.status().get("status")
    if status != "done":
        raise ArchlabError(f"release: run {run.id} is {status}, not done; a release bundles a finished run")
    if out.exists() and any(out.iterdir()):
        raise ArchlabError(f"release: {out} exists and is not empty; choose another --out or remove it")
    copies: list[tuple[Path, str]] = []  # (file, its path in the bundle)
    if (run.model_dir / "config.json").is_file():
        copies += [(file, f"model/{file.relative_to(run.model_dir).as_posix()}")
                   for file in sorted(p for p in run.model_dir.rglob("*") if p.is_file())]
        weights = "model/ (the exported model: AutoModelForCausalLM.from_pretrained(\"model\") after `import archlab`)"
        record = run.status()
        if record.get("best_step"):  # train.load_best_model_at_end exported the best evaluation's weights
            weights += (f"; these are the best checkpoint's weights (step {record['best_step']}, eval metric "
                        f"{record.get('best_metric')}), not the last step's ({record.get('step')})")
    else:
        from archlab.train.checkpoint import list_checkpoints, verify

        good = [c for c in reversed(list_checkpoints(run.checkpoints)) if verify(c)]
        if not good:
            raise ArchlabError(f"release: run {run.id} has neither an exported model nor a verified checkpoint")
        copies += [(good[0] / name, f"checkpoint/{good[0].name}/{name}")  # the weights; the optimizer state stays
                   for name in ("model.safetensors", "meta.json") if (good[0] / name).is_file()]
        weights = f"checkpoint/{good[0].name}/ (the trained tensors; rebuild the model from config.yaml)"
    copies += [(run.path / name, name) for name in (RunDir.CONFIG, RunDir.METRICS, RunDir.SAMPLES, RunDir.ENV,
                                                    RunDir.STATUS) if (run.path / name).is_file()]
    copies += [(file, f"{RunDir.EVAL}/{file.name}") for file in sorted((run.path / RunDir.EVAL).glob("*"))
               if file.is_file()]
    damaged = [(src, why) for src, _ in copies if (why := damage(src)) is not None]
    if damaged:
        path, why = damaged[0]
        raise ArchlabError(f"release: {path} is damaged ({why}); a bundle must load: re-run the eval or the run "
                           f"that wrote it" + (f" ({len(damaged) - 1} more damaged file(s))" if len(damaged) > 1 else ""))
    out.mkdir(parents=True, exist_ok=True)
    for src, name in copies:
        _copy(src, out / name)
    card = model_card(run)
    intro = (f"\n\n## This bundle\n\nMade by `archlab release` from `{run.path}`. Weights: {weights}. "
             f"Every file is listed with its SHA-256 in `{MANIFEST}`; check them with "
             f"`archlab release --verify <this folder>` (or `sha256sum -c {MANIFEST}`).\n")
    atomic_write(out / "README.md", card.rstrip() + intro)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    atomic_write(out / MANIFEST, "".join(f"{_sha256(p)}  {p.relative_to(out).as_posix()}\n" for p in files))
    return out


def verify_release(folder: Path) -> list[str]:
    """Problems found (empty when every file matches the manifest and no file is unlisted)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise ArchlabError(f"release --verify: {folder} has no {MANIFEST}; is it a release bundle?")
    listed: dict[str, str] = {}
    for line in manifest.read_text().splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            return [f"{MANIFEST}: malformed line {line!r}"]
        listed[name] = digest
    problems = []
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif _sha256(path) != digest:
            problems.append(f"changed: {name} (checksum differs)")
        elif (why := damage(path)) is not None:
            problems.append(f"damaged: {name} ({why})")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    problems += [f"not in the manifest: {name}" for name in sorted(present - set(listed))]
    return problems
