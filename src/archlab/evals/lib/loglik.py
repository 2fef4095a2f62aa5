"""Log-likelihood scoring shared by the evals: lm-eval's tokenisation rules, a context computed once.

Three primitives:

- ``encode_pair``: (context, continuation) -> token ids exactly as lm-eval's ``HFLM`` makes them, so
  archlab's multiple-choice numbers equal lm-eval's.
- ``PrefixState``: runs a context once, then scores many continuations (and greedy-decodes) from its
  cache; falls back to full forward passes for models whose cache cannot be repeated.
- ``score_full`` and ``token_nlls``: plain batched forward passes (no cache), for lm-eval's reference
  path and for perplexity over long documents.
"""

from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def model_max_length(model: nn.Module, default: int = 2048) -> int:
    """HFLM's rule: the first of n_positions / max_position_embeddings / n_ctx in the config, else 2048."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return default


def encode(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``tok.encode`` with the tokenizer's own special-token default, as lm-eval's HFLM calls it (training
    starts each document the same way: ``archlab.data.encode_document``)."""
    return list(tok.encode(text))


def prefix_token_id(tok: PreTrainedTokenizerBase) -> int:
    """The token lm-eval conditions on when the context is empty: BOS, else EOS."""
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def encode_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``TemplateLM`` split: trailing spaces move to the continuation, then encode whole and cut.

    The continuation ids are ``encode(context + continuation)[len(encode(context)):]``, so a token that
    merges across the boundary is scored as part of the continuation, as lm-eval does.
    """
    if context == "":
        cont = list(tok.encode(continuation, add_special_tokens=False))
        prefix = prefix_token_id(tok)
        return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(tok, context + continuation)
    ctx = encode(tok, context)
    return ctx, whole[len(ctx):]


@functools.lru_cache(maxsize=32)
def _forward_kwargs(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def _call(model: nn.Module, ids: torch.Tensor, cache=None, want_cache: bool = False, last_only: bool = False):
    """Forward with whatever cache keyword the model takes (v5 ``cache`` or older ``past_key_values``)."""
    accepted = _forward_kwargs(type(model))
    kwargs: dict = {}
    if want_cache or cache is not None:
        kwargs["use_cache"] = True
        if cache is not None:
            kwargs["cache" if "cache" in accepted else "past_key_values"] = cache
    if last_only and "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = 1  # skips the LM head on every context position but the last
    out = model(input_ids=ids, **kwargs)
    new_cache = getattr(out, "cache", None) if "cache" in out else getattr(out, "past_key_values", None)
    return out.logits, new_cache


def _repeatable(cache) -> bool:
    return cache is not None and hasattr(cache, "batch_repeat_interleave")


@dataclass
class Scored:
    """Log-likelihood of one continuation: the sum, whether greedy decoding gives it, its token count."""

    ll: float
    greedy: bool
    tokens: int


def _gather(logprobs: torch.Tensor, targets: list[int]) -> Scored:
    """``logprobs[j]`` is the distribution that predicts ``targets[j]``."""
    target = torch.tensor(targets, device=logprobs.device)
    picked = logprobs.gather(-1, target[:, None])[:, 0]
    greedy = bool((logprobs.argmax(-1) == target).all())
    return Scored(float(picked.sum()), greedy, len(targets))


class PrefixState:
    """A context run once; continuations are scored and decoded from its cache.

    Args:
        model: a causal LM returning ``.logits`` (and a cache when ``use_cache=True``).
        context: token ids of the context (at least one).
        batch_tokens: cap on rows x length when continuations are scored together.
    """

    def __init__(self, model: nn.Module, context: list[int], batch_tokens: int = 32768):
        self.model, self.context, self.batch_tokens = model, list(context), batch_tokens
        ids = torch.tensor([self.context], device=device_of(model))
        with torch.no_grad():
            logits, self.cache = _call(model, ids, want_cache=True, last_only=True)
        self.first = F.log_softmax(logits[0, -1].float(), -1)

    @property
    def cached(self) -> bool:
        return _repeatable(self.cache)

    def score(self, continuations: list[list[int]]) -> list[Scored]:
        """Log-likelihood of each continuation given the context, in input order."""
        out: list[Scored | None] = [None] * len(continuations)
        longer = [i for i, c in enumerate(continuations) if len(c) > 1]
        for i, cont in enumerate(continuations):
            if len(cont) == 1:  # one-token continuations need nothing past the context pass
                out[i] = _gather(self.first[None], cont)
        if longer and not self.cached:
            rows = [(self.context, continuations[i]) for i in longer]
            for i, scored in zip(longer, score_full(self.model, rows), strict=True):
                out[i] = scored
            return out  # type: ignore[return-value]
        width = max((len(continuations[i]) for i in longer), default=1)
        per_chunk = max(1, self.batch_tokens // (len(self.context) + width))
        for start in range(0, len(longer), per_chunk):
            chunk = longer[start : start + per_chunk]
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(len(chunk))
            rows = torch.zeros(len(chunk), width - 1, dtype=torch.long)
            for r, i in enumerate(chunk):  # right padding: later positions never reach earlier ones
                rows[r, : len(continuations[i]) - 1] = torch.tensor(continuations[i][:-1])
            with torch.no_grad():
                logits, _ = _call(self.model, rows.to(self.first.device), cache=cache)
            logprobs = F.log_softmax(logits.float(), -1)
            for r, i in enumerate(chunk):
                cont = continuations[i]
                dist = torch.cat([self.first[None], logprobs[r, : len(cont) - 1]])
                out[i] = _gather(dist, cont)
        return out  # type: ignore[return-value]

    def greedy(self, max_new_tokens: int, stop_ids: set[int] | None = None) -> list[int]:
        """Greedy continuation of the context (the cache is copied, so scoring is unaffected)."""
        stop_ids = stop_ids or set()
        token = int(self.first.argmax())
        generated = [token]
        cache = copy.deepcopy(self.cache) if self.cached else None
        device = self.first.device
        while len(generated) < max_new_tokens and token not in stop_ids:
            with torch.no_grad():
                if cache is not None:
                    logits, cache = _call(self.model, torch.tensor([[token]], device=device), cache=cache)
                else:  # no usable cache: recompute the whole sequence each step
                    ids = torch.tensor([self.context + generated], device=device)
                    logits, _ = _call(self.model, ids, last_only=True)
            token = int(logits[0, -1].argmax())
            generated.append(token)
        return generated[:-1] if generated[-1] in stop_ids else generated


def score_full(
    model: nn.Module,
    requests: list[tuple[list[int], list[int]]],
    max_length: int | None = None,
    batch_size: int = 16,
) -> list[Scored]:
    """lm-eval's reference computation: each (context, continuation) as its own row, no cache.

    Rows are ``(context + continuation)[-(max_length + 1):][:-1]`` (left truncation as in HFLM), batched
    longest first and right-padded; the last ``len(continuation)`` positions are scored.
    """
    device = device_of(model)
    rows = []
    for ctx, cont in requests:
        whole = ctx + cont
        rows.append(whole[-(max_length + 1):][:-1] if max_length else whole[:-1])
    order = sorted(range(len(requests)), key=lambda i: -len(rows[i]))
    out: list[Scored | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(rows[i]) for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, i in enumerate(chunk):
            ids[r, : len(rows[i])] = torch.tensor(rows[i])
        with torch.no_grad():
            logits, _ = _call(model, ids.to(device))
        for r, i in enumerate(chunk):
            cont, end = requests[i][1], len(rows[i])
            out[i] = _gather(F.log_softmax(logits[r, end - len(cont) : end].float(), -1), cont)
    return out  # type: ignore[return-value]


def token_nlls(model: nn.Module, ids: list[int], window: int, stride: int | None = None,
               batch_size: int = 4) -> torch.Tensor:
    """Per-token negative log-likelihood of ``ids[1:]`` with a sliding window.

    Each window holds at most ``window`` tokens and scores the next ``stride`` unscored tokens, with as
    much earlier text as fits as their context, so every token after the first is scored exactly once
    with at least ``window - stride`` tokens of context (all of it while the document fits).
    ``stride = window - 1`` is lm-eval's rolling loglikelihood (windows overlap by one token).
    """
    stride = max(1, min(stride or window // 2, window - 1))
    spans = []  # (begin, end, first target): inputs ids[begin:end] score targets [first, end)
    first = 1
    while first < len(ids):
        end = min(len(ids), first + stride)
        spans.append((max(0, end - window), end, first))
        first = end
    device = device_of(model)
    out = torch.empty(max(len(ids) - 1, 0))
    for start in range(0, len(spans), batch_size):
        chunk = spans[start : start + batch_size]
        width = max(e - b for b, e, _ in chunk)
        rows = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (b, e, _) in enumerate(chunk):
            rows[r, : e - b] = torch.tensor(ids[b:e])
        with torch.no_grad():
            logits, _ = _call(model, rows.to(device))
        for r, (b, e, first) in enumerate(chunk):
            # logits at position p (absolute b+p) predict token b+p+1
            pred = logits[r, first - 1 - b : e - 1 - b].float()
            target = rows[r, first - b : e - b].to(device)
            out[first - 1 : e - 1] = F.cross_entropy(pred, target, reduction="none").cpu()
    return out


def _accepts_padding(model: nn.Module) -> bool:
    accepted = _forward_kwargs(type(model))
    return {"attention_mask", "position_ids"} <= accepted


def score_contexts_batched(model: nn.Module, groups: list[tuple[list[int], list[list[int]]]],
                           ) -> list[list[Scored]] | None:
    """Several (context, continuations) groups in two forward passes; None when the model cannot.

    Pass 1 runs the contexts left-padded (attention mask and explicit positions) and keeps each one's
    last logits and the cache; pass 2 selects each context's cache rows once per continuation and runs
    the continuations right-padded. The caller checks the result against ``PrefixState`` once, because a
    model may accept a mask and still not honour it (a recurrent mixer that reads padding).
    """
    if not _accepts_padding(model) or not groups:
        return None
    device = device_of(model)
    width = max(len(c) for c, _ in groups)
    ids = torch.zeros(len(groups), width, dtype=torch.long)
    mask = torch.zeros(len(groups), width, dtype=torch.long)
    for r, (ctx, _) in enumerate(groups):
        ids[r, width - len(ctx):], mask[r, width - len(ctx):] = torch.tensor(ctx), 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    use_cache=True, **({"logits_to_keep": 1} if "logits_to_keep" in _forward_kwargs(type(model))
                                       else {}))
    cache = getattr(out, "cache", None) if "cache" in out else getattr(out, "past_key_values", None)
    first = F.log_softmax(out.logits[:, -1].float(), -1)
    rows = [(g, k, cont) for g, (_, conts) in enumerate(groups)
            for k, cont in enumerate(c for c in conts if len(c) > 1)]
    later: dict[tuple[int, int], torch.Tensor] = {}
    if rows and (cache is None or not hasattr(cache, "batch_select_indices")):
        return None
    rows.sort(key=lambda r: len(r[2]))  # similar lengths together: little padding in pass 2
    per_pass = 32  # rows per continuation pass: sorted by length, so padding stays small
    for start in range(0, len(rows), per_pass):
        part = rows[start : start + per_pass]
        part_cache = cache if start + per_pass >= len(rows) else copy.deepcopy(cache)
        index = torch.tensor([g for g, _, _ in part])
        part_cache.batch_select_indices(index.to(device))
        span = max(len(cont) for _, _, cont in part) - 1
        cont_ids = torch.zeros(len(part), span, dtype=torch.long)
        for r, (_, _, cont) in enumerate(part):
            cont_ids[r, : len(cont) - 1] = torch.tensor(cont[:-1])
        cont_mask = torch.cat([mask[index], torch.ones(len(part), span, dtype=torch.long)], 1)
        cont_pos = mask[index].sum(-1, keepdim=True) + torch.arange(span)
        kwargs = {"cache" if "cache" in _forward_kwargs(type(model)) else "past_key_values": part_cache}
        with torch.no_grad():
            logits = model(input_ids=cont_ids.to(device), attention_mask=cont_mask.to(device),
                           position_ids=cont_pos.to(device), use_cache=True, **kwargs).logits
        logprobs = F.log_softmax(logits.float(), -1)
        for r, (g, k, _) in enumerate(part):
            later[(g, k)] = logprobs[r]
    out_scores = []
    for g, (_, conts) in enumerate(groups):
        scored, k = [], 0
        for cont in conts:
            if len(cont) == 1:
                scored.append(_gather(first[g][None], cont))
            else:
                scored.append(_gather(torch.cat([first[g][None], later[(g, k)][: len(cont) - 1]]), cont))
                k += 1
        out_scores.append(scored)
    return out_scores
