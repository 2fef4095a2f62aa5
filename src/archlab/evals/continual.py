"""Continual learning at test time (``continual``): a forgetting matrix over ordered domain segments.

Each segment (a domain: prose, wiki, code, another language) has a *train* part and a *held-out* part.
Walking the segments in order, a memorizing model memorizes segment i's train part (only that part:
seed 003's harness re-scored the memorized tokens in kmccleary3301/nested_learning), then the held-out parts of
segments 0..i are scored. Row i of the matrix is "after segment i", column j "held-out of segment j";
forgetting of j is its loss at the end minus its loss right after its own segment. The same matrix
without memorization (a static model: every row equal) is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.memorize import memorized, require_memorize
from archlab.evals.lib.ppl import default_window, encode_text, stream_loss
from archlab.evals.lib.texts import corpus_documents, read_eval_set
from archlab.evals.lib.views import EvalRun, View, eval_view, fmt, plot_file, pyplot, save_figure


class ContinualParams(Config):
    segments: list[str] = Field(["shakespeare", "wiki", "code", "multilingual:lunyu_zh"],
                                description="ordered domains: an embedded corpus (train split / test split), "
                                "multilingual:<set>, or a .txt file (first half train, second half held-out)")
    train_tokens: int = Field(2048, ge=1, description="tokens of each segment's train part given to memorize")
    heldout_tokens: int = Field(1024, ge=2, description="tokens of each segment's held-out part scored")
    window: int | None = Field(None, ge=2, description="scoring window and memorize chunk, in tokens; "
                               "default the model's max length (at most 512)")
    memorize: bool = Field(False, description="memorize each segment's train part before scoring")


@dataclass
class Segment:
    name: str
    train: list[int]
    heldout: list[int]


def _halves(text: str) -> tuple[str, str]:
    cut = text.rfind("\n", 0, len(text) // 2)
    cut = cut if cut > 0 else len(text) // 2
    return text[:cut], text[cut:]


def load_segment(ctx: EvalContext, spec: str, params: ContinualParams) -> Segment:
    """Train and held-out token ids of one segment; the two never share a document (or a byte for files)."""
    if spec.startswith("multilingual:"):
        train, heldout = _halves("\n".join(r["text"] for r in read_eval_set("multilingual", spec.partition(":")[2])))
    elif Path(spec).expanduser().is_file():
        train, heldout = _halves(Path(spec).expanduser().read_text(encoding="utf-8"))
    else:
        train = "\n\n".join(corpus_documents(spec, ("train",))[:8])
        heldout = "\n\n".join(corpus_documents(spec, ("test",)))
    tok = ctx.tokenizer
    # no tokenizer packs more than 32 characters into a token: encode only the prefix that can be used
    segment = Segment(spec, encode_text(tok, train[: 32 * params.train_tokens])[: params.train_tokens],
                      encode_text(tok, heldout[: 32 * params.heldout_tokens])[: params.heldout_tokens])
    if len(segment.heldout) < 2:
        raise ArchlabError(f"continual: segment '{spec}' has no held-out text")
    return segment


def _memorize_train(ctx: EvalContext, segment: Segment, window: int) -> None:
    """Feed the train part to ``memorize`` in window-sized chunks; held-out tokens never come here."""
    for start in range(0, len(segment.train), window):
        chunk = segment.train[start : start + window]
        ctx.model.memorize(_as_batch(ctx, chunk), _as_batch(ctx, [1] * len(chunk)))


def _as_batch(ctx: EvalContext, values: list[int]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.long, device=ctx.device)


def _score(ctx: EvalContext, segment: Segment, window: int) -> dict[str, float | None]:
    totals, _ = stream_loss(ctx, segment.heldout, window, window - 1)
    return {"loss": totals.loss, "bits_per_byte": totals.bits_per_byte}


@register_eval("continual", ContinualParams, metrics=("loss*", "bits_per_byte*", "forgetting*"))
def continual(ctx: EvalContext, params: ContinualParams) -> EvalResult:
    """Forgetting matrix over ordered domains, with and without test-time memorization of train parts."""
    if params.memorize:
        require_memorize(ctx.model, "continual")
    window = default_window(ctx, params.window, cap=512)
    segments = [load_segment(ctx, s, params) for s in params.segments]
    with memorized(ctx.model, None):  # a fresh memory for the static baseline
        base = [_score(ctx, s, window) for s in segments]
    matrices = {"loss": [[base[j]["loss"] for j in range(i + 1)] for i in range(len(segments))],
                "bits_per_byte": [[base[j]["bits_per_byte"] for j in range(i + 1)] for i in range(len(segments))]}
    metrics: dict[str, float | None] = {}
    for s, b in zip(segments, base, strict=True):
        metrics[f"loss/{s.name}"], metrics[f"bits_per_byte/{s.name}"] = b["loss"], b["bits_per_byte"]
    metrics["loss_mean"] = sum(b["loss"] for b in base) / len(base)
    details = {"segments": [{"name": s.name, "train_tokens": len(s.train), "heldout_tokens": len(s.heldout)}
                            for s in segments], "window": window, "matrix": matrices}
    if params.memorize:
        rows = []
        with memorized(ctx.model, None):  # memory persists across segments inside, reset around
            for i, segment in enumerate(segments):
                _memorize_train(ctx, segment, window)
                rows.append([_score(ctx, segments[j], window) for j in range(i + 1)])
        mem = {k: [[cell[k] for cell in row] for row in rows] for k in ("loss", "bits_per_byte")}
        details["matrix_memorize"] = mem
        last = mem["loss"][-1]
        for j, s in enumerate(segments):
            metrics[f"loss_memorize/{s.name}"] = mem["loss"][j][j]
            metrics[f"bits_per_byte_memorize/{s.name}"] = mem["bits_per_byte"][j][j]
            metrics[f"forgetting/{s.name}"] = last[j] - mem["loss"][j][j]
        metrics["loss_memorize_mean"] = sum(mem["loss"][j][j] for j in range(len(segments))) / len(segments)
        earlier = [last[j] - mem["loss"][j][j] for j in range(len(segments) - 1)]
        metrics["forgetting_mean"] = sum(earlier) / len(earlier) if earlier else 0.0
    return EvalResult(
        metrics=metrics,
        n=sum(len(s.heldout) - 1 for s in segments),
        headline="loss_memorize_mean" if params.memorize else "loss_mean",
        details=details,
    )


@eval_view("continual", order=50)
def continual_view(runs: list[EvalRun], plots: Path) -> View:
    """Continual learning: held-out loss per segment, with and without memorization, and the forgetting matrix."""
    names = [s["name"] for s in runs[0].details["segments"]]
    header = ["Variant", *[f"loss {n}" for n in names], *[f"loss after memorize {n}" for n in names], "forgetting"]
    body, images = [], []
    for r in runs:
        m = r.metrics
        body.append([r.title, *[fmt(m.get(f"loss/{n}")) for n in names],
                     *[fmt(m.get(f"loss_memorize/{n}")) for n in names], fmt(m.get("forgetting_mean"))])
        key = "matrix_memorize" if "matrix_memorize" in r.details else "matrix"
        images.append(forgetting_matrix(r.details[key]["loss"], names, plot_file(plots, "forgetting", r.id), r.title))
    note = "Rows: after memorizing segment i; columns: held-out loss of segment j (never memorized)."
    return View("Continual learning (forgetting)", [header, *body], note, images)


def forgetting_matrix(matrix: list[list[float]], names: list[str], path: Path, title: str) -> Path:
    import numpy as np

    plt = pyplot()
    size = len(names)
    values = np.full((size, size), np.nan)
    for i, row in enumerate(matrix):
        values[i, : len(row)] = row
    fig, ax = plt.subplots(figsize=(1.3 * size + 2.5, 1.0 * size + 1.5))
    image = ax.imshow(values, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white")
    short = [n.split(":")[-1].split("/")[-1][:14] for n in names]
    ax.set_xticks(range(size), short, rotation=30, ha="right")
    ax.set_yticks(range(size), [f"after {s}" for s in short])
    ax.set_title(f"held-out loss: {title}", fontsize=9)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)
