"""A finished run on the Hugging Face hub: a model card generated from its config and evals, and the push.

``train.push_to_hub`` pushes when a run finishes; ``archlab push RUN`` pushes a finished run later. Offline
(or without a token) the push fails with one line and the run stays done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from archlab.errors import ArchlabError
from archlab.rundir import RunDir


def headline_rows(run: RunDir) -> list[tuple[str, str, str, str]]:
    """(metric, value, 95% interval, n) of every numeric eval metric of the run."""
    rows = []
    for name, payload in sorted(run.eval_results().items()):
        for key, value in (payload.get("metrics") or {}).items():
            if isinstance(value, int | float):
                ci = (payload.get("ci95") or {}).get(key)
                rows.append((f"{name}.{key}", f"{value:.4g}", f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "—",
                             str(payload.get("n", "—"))))
    return rows


def model_card(run: RunDir, repo_id: str | None = None) -> str:
    """A model card (README.md with the hub's YAML header) from the run's resolved config, evals and env."""
    config: dict[str, Any] = run.read_config()
    status = run.status()
    env = run.read_env()
    model = config.get("model", {})
    data = config.get("data", {})
    train = config.get("train", {})
    arch = model.get("arch") or model.get("pretrained") or "archlab"
    header = {"library_name": "transformers", "tags": ["archlab", str(arch)], "pipeline_tag": "text-generation"}
    if isinstance(data.get("source"), str) and not data["source"].startswith(("embedded:", "/", ".")):
        header["datasets"] = [data["source"]]
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {repo_id or run.id}", "",
             f"A `{arch}` language model trained with archlab (run `{run.id}`, status {status.get('status')}, "
             f"{status.get('step', '—')} optimizer steps). Load it with `AutoModelForCausalLM.from_pretrained` "
             "(archlab registers its architectures with the Auto classes: `import archlab` first).", "",
             "## Training", "",
             f"- data: `{data.get('source')}`, tokenizer `{data.get('tokenizer')}`, block size {data.get('block_size')}",
             f"- steps {train.get('max_steps')}, batch {train.get('per_device_train_batch_size')} × accumulation "
             f"{train.get('gradient_accumulation_steps')}, optimizer {train.get('optim')}, learning rate "
             f"{train.get('learning_rate')} ({train.get('lr_scheduler_type')}), seed {train.get('seed')}", ""]
    rows = headline_rows(run)
    if rows:
        lines += ["## Evaluation", "", "Intervals are 95% (Wilson for accuracies); n is the number of scored items "
                  "or tokens.", "", "| metric | value | 95% interval | n |", "|---|---|---|---|"]
        lines += [f"| {m} | {v} | {ci} | {n} |" for m, v, ci, n in rows]
        lines.append("")
    lines += ["## Resolved config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    if env:
        lines += ["## Environment", "", "```json", json.dumps(env, indent=1), "```", ""]
    return "\n".join(lines)


def push_run(run_dir: Path, repo_id: str | None = None, token: str | None = None, private: bool = False) -> str:
    """Upload the run's exported model with a generated model card; returns the repo id.

    Raises ArchlabError with one line when the run is not finished, has no exported model, or the hub
    cannot be reached (offline, no token)."""
    from archlab.offline import hub_reachable

    run = RunDir(run_dir)
    if not run.has_config():
        raise ArchlabError(f"{run_dir} is not a run folder (no config.yaml); pass runs/<plan>/<run-id>")
    if not run.is_done():
        raise ArchlabError(f"push: run {run.id} is {run.status().get('status')}, not done; finish it first")
    if not (run.model_dir / "config.json").is_file():
        raise ArchlabError(f"push: run {run.id} has no exported model in {run.model_dir} (pretrained or grafted runs "
                           "keep their trained tensors in checkpoints/); use archlab release to bundle it")
    if not hub_reachable():
        raise ArchlabError(f"push: the Hugging Face hub is not reachable (offline?); run {run.id} is kept as it is — "
                           f"run `archlab push {run_dir}` when online")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        if repo_id is None:
            repo_id = f"{api.whoami()['name']}/{run.id}"
        api.create_repo(repo_id, exist_ok=True, private=private)
        api.upload_folder(folder_path=str(run.model_dir), repo_id=repo_id,
                          commit_message=f"archlab run {run.id}")
        api.upload_file(path_or_fileobj=model_card(run, repo_id).encode(), path_in_repo="README.md", repo_id=repo_id,
                        commit_message="model card from the run's config and evals")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArchlabError(f"push to {repo_id or 'the hub'} failed: {first} (is HF_TOKEN set?); run {run.id} is kept "
                           "as it is") from None
    return repo_id
