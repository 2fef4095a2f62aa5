"""``match: params``: size a variant's width or depth so its parameter count equals the baseline's (±2%).

Comparisons between architectures are fair only at matched size. A run (an axis value, a block's ``set``,
or the defaults) asks for it with ``match: params`` or ``match: {params: baseline, by: <dotted key>,
multiple_of: N, tolerance: 0.02}``. At expansion (so ``archlab plan`` shows it), the key ``by`` (default
``model.config.hidden_size``) is set to the value whose model, built on the ``meta`` device, has the
parameter count closest to the baseline's; the run's resolved config records the value chosen, and a
count that cannot come within the tolerance is an error naming the nearest.

``count: non_embedding`` compares what training updates less lookup tables (token, position and hash n-gram
embeddings, an untied output embedding): fair between models whose tables differ in kind, e.g. a byte model
with millions of hash n-gram rows (lookups, no FLOPs) against a BPE transformer. Each model is counted with
its own tokenizer's vocabulary.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from archlab.config import Config, get_dotted
from archlab.errors import ArchlabError


class MatchConfig(Config):
    params: Literal["baseline"] = Field("baseline", description="whose parameter count to match")
    by: str = Field("model.config.hidden_size", description="dotted key resized: model.config.hidden_size (width) "
                    "or model.config.num_hidden_layers (depth)")
    multiple_of: int | None = Field(None, ge=1, description="allowed step of the value (default: 2 x attention heads "
                                    "for hidden_size, so heads divide it with an even head size; 1 otherwise)")
    tolerance: float = Field(0.02, gt=0, lt=1, description="largest relative difference from the baseline's count")
    count: Literal["total", "non_embedding"] = Field(
        "total", description="what is matched: total (all parameters) or non_embedding (trainable parameters less "
        "lookup tables: token, position and hash n-gram embeddings, an untied output embedding)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {} if value == "params" else value


def _count(config, vocab: int, count: str = "total") -> int:
    import torch

    from archlab.plan.build import build_run_model

    with torch.device("meta"):
        model = build_run_model(config, vocab)
    return count_parameters(model, count)


def count_parameters(model, count: str = "total") -> int:
    """Parameters of ``model`` (tied weights once): all, or ``non_embedding`` (see ``MatchConfig.count``)."""
    from torch import nn

    params = {id(p): p for p in model.parameters()}
    if count == "total":
        return sum(p.numel() for p in params.values())
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    output = getattr(model, "get_output_embeddings", lambda: None)()
    if output is not None and hasattr(output, "weight"):
        tables.add(id(output.weight))
    return sum(p.numel() for i, p in params.items() if p.requires_grad and i not in tables)


def _with(config, key: str, value: int):
    from archlab.config import deep_merge, expand_dotted

    data = deep_merge(config.to_dict(), expand_dotted({key: value}))
    return type(config).parse(data, where=f"match: {key}={value}")


def resolve_match(config, baseline, vocab: int, baseline_vocab: int | None = None):
    """``config`` with ``match.by`` set so its parameter count matches ``baseline``'s within the tolerance.

    ``vocab``: the run's tokenizer size; ``baseline_vocab``: the baseline's (default: the same).
    """
    match: MatchConfig = config.match
    target = _count(baseline, vocab if baseline_vocab is None else baseline_vocab, match.count)
    current = get_dotted(config.to_dict(), match.by)
    if not isinstance(current, int):
        raise ArchlabError(f"match: {match.by} is {current!r}, not an integer the match can resize; set match.by")
    step = match.multiple_of
    if step is None:
        heads = get_dotted(config.to_dict(), "model.config.num_attention_heads")
        step = 2 * heads if match.by.endswith("hidden_size") and isinstance(heads, int) else 1
    counts: dict[int, int] = {}

    def count(k: int) -> int:
        if k not in counts:
            try:
                counts[k] = _count(_with(config, match.by, k * step), vocab, match.count)
            except ArchlabError:
                raise
            except Exception as exc:  # noqa: BLE001  (a size the model cannot take ends the search with one line)
                raise ArchlabError(f"match: {match.by}={k * step} cannot be built: {str(exc).splitlines()[0]}") from None
        return counts[k]

    high = 1
    while count(high) < target:  # parameter count grows with width and depth: bracket, then bisect
        high *= 2
        if high > 1 << 16:
            raise ArchlabError(f"match: no {match.by} up to {high * step} reaches the baseline's {target:,} parameters")
    low = 1
    while low < high:
        mid = (low + high) // 2
        if count(mid) < target:
            low = mid + 1
        else:
            high = mid
    best = min({max(1, low - 1), low}, key=lambda k: abs(count(k) - target))
    error = abs(count(best) - target) / target
    what = "non-embedding " if match.count == "non_embedding" else ""
    if error > match.tolerance:
        raise ArchlabError(f"match: the nearest {match.by} is {best * step} with {count(best):,} {what}parameters, "
                           f"{error:.1%} from the baseline's {target:,} (tolerance {match.tolerance:.0%}); "
                           f"lower match.multiple_of or match another key")
    return _with(config, match.by, best * step)
