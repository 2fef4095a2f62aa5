"""Incremental decoding of the byte latent model: new bytes continue from the state in the Cache.

Every part keeps what it needs to go on from where the last call stopped, so a byte costs O(1) outside the
entropy model's attention (over the bytes seen) and the latent attention (O(log P) keys), and prefill then
steps equal one full forward:

- hash n-grams: the last ``max(n) - 1`` bytes; the n-gram conv: its last ``kernel - 1`` inputs;
- every IntegralLNN of the encoder and decoder: its conv window and EMA state (``IntegralLNN`` carries them);
- patching: whether the next byte starts a patch (known at the previous byte: the rules are causal), the open
  patch's length (max-size rule) and the last entropy (relative rule); the entropy model's own keys/values,
  with a per-row mask and positions that make a newline restart its context (``can_stream``). An entropy
  model that cannot decode so (a recurrent one) re-reads the text since the batch's earliest current line
  start instead (or everything when ``reset_at_newline`` is off);
- the open patch: the sum and count of its encoder states;
- the latent transformer: each layer's RoPE'd keys and values of the completed patches [B, capacity, H, K]
  and the per-row count; the latent of the last completed patch (what later bytes read until the next one).

Rows complete patches at different bytes: each byte that completes a patch in some row runs one latent step for
all rows, and only the rows that completed one keep it (the others' write lands in their next, unused slot).
All state is batch-first in ``states_of(cache, 0)``, so beam search reorders it with the rest of the cache.
"""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from archlab.nn.byte_latent import normalized_entropy
from archlab.nn.cache import StateMixin


def _lnn_state(state: StateMixin, name: str) -> dict | None:
    h = state.get(f"{name}.h")
    return None if h is None else {"conv": state.get(f"{name}.conv"), "h": h}


def _keep_lnn_state(state: StateMixin, name: str, value: dict) -> None:
    state.set(f"{name}.conv", value["conv"])
    state.set(f"{name}.h", value["h"])


def _starts(model, ids_BN: torch.Tensor, state: StateMixin, seen: int) -> torch.Tensor:
    """[B, N + 1]: column 0 says whether the first new byte starts a patch, column i + 1 whether byte i ends one."""
    cfg = model.config
    B, N = ids_BN.shape
    if cfg.patching == "static":
        j = torch.arange(seen, seen + N + 1, device=ids_BN.device)
        return (j % cfg.patch_size == 0).expand(B, N + 1)
    if can_stream(model.entropy_model) and state.get("context") is None:
        H_BN1 = _streamed_entropies(model, ids_BN, state)
    else:
        H_BN1 = _reread_entropies(model, ids_BN, state)
    if state.get("next_start") is None:  # nothing seen: column 0 is byte 0, which always starts a patch
        first, length, previous = torch.ones(B, dtype=torch.bool, device=ids_BN.device), \
            torch.ones(B, dtype=torch.long, device=ids_BN.device), H_BN1[:, 0]
    else:
        first, length, previous = state.get("next_start"), state.get("run"), state.get("entropy")
    threshold, rel = float(model.threshold), cfg.entropy_rel_threshold
    columns = [first]
    for i in range(1, N + 1):  # entropy_boundaries' loop, continued from the carried length and entropy
        H = H_BN1[:, i]
        start = (H > threshold) | (length >= cfg.max_patch_size)
        if rel is not None:
            start = start | ((H - previous) > rel)
        length = torch.where(start, torch.ones_like(length), length + 1)
        columns.append(start)
        previous = H
    state.set("run", length)
    state.set("entropy", previous)
    return torch.stack(columns, 1)


def can_stream(entropy_model) -> bool:
    """Whether the entropy model decodes with a key/value cache honouring a 2-d mask and explicit positions.

    Then the newline restarts are a mask and a position reset instead of a re-read. Probed once (one byte):
    every cache layer must be plain keys/values (a recurrent layer's state cannot be masked).
    """
    known = getattr(entropy_model, "_archlab_streams", None)
    if known is None:
        accepted = set(inspect.signature(type(entropy_model).forward).parameters)
        known = {"attention_mask", "position_ids"} <= accepted
        if known:
            cache = DynamicCache()
            ids = torch.zeros(1, 1, dtype=torch.long, device=next(entropy_model.parameters()).device)
            with torch.no_grad():
                entropy_model(input_ids=ids, use_cache=True, **{_cache_key(entropy_model): cache})
            known = bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)
        entropy_model._archlab_streams = known
    return known


def _cache_key(model) -> str:
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _streamed_entropies(model, ids_BN: torch.Tensor, state: StateMixin) -> torch.Tensor:
    """[B, N + 1] entropies (column 0 only when nothing was seen) from the entropy model's own cache.

    The model reads BOS, then each byte, except that a newline is fed as a BOS at position 0 with the row's
    earlier keys masked out: its output is then the prediction from BOS alone, and the line's later bytes
    see only their line, as ``byte_entropies`` runs each line alone (BLT's restart). Restarts happen at
    different bytes in different rows, so a chunk is fed in pieces that each begin at a restart.
    """
    cfg, em = model.config, model.entropy_model
    B, N = ids_BN.shape
    device = ids_BN.device
    restart = (ids_BN == cfg.newline_id) if cfg.reset_at_newline else torch.zeros_like(ids_BN, dtype=torch.bool)
    tokens = torch.where(restart, torch.full_like(ids_BN, cfg.bos_for_entropy), ids_BN)
    fresh = state.get("entropy_positions") is None
    if fresh:
        tokens = torch.cat([ids_BN.new_full((B, 1), cfg.bos_for_entropy), tokens], 1)
        restart = torch.cat([restart.new_ones(B, 1), restart], 1)
    layers = 0
    while state.get(f"entropy.{layers}.keys") is not None:
        layers += 1
    mask = state.get("entropy_mask")
    mask = torch.zeros(B, 0, dtype=torch.long, device=device) if mask is None else mask
    last = state.get("entropy_positions")
    last = torch.full((B,), -1, dtype=torch.long, device=device) if last is None else last
    cuts = sorted({0, tokens.shape[1], *torch.nonzero(restart[:, 1:].any(0)).flatten().add(1).tolist()})
    columns = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        starts = restart[:, a]  # a restart inside a piece is only ever at its first token
        first = torch.where(starts, torch.zeros_like(last), last + 1)
        positions = first[:, None] + torch.arange(b - a, device=device)
        mask = torch.cat([torch.where(starts[:, None], torch.zeros_like(mask), mask),
                          mask.new_ones(B, b - a)], 1)
        cache = DynamicCache()
        for i in range(layers):
            cache.update(state.get(f"entropy.{i}.keys"), state.get(f"entropy.{i}.values"), i)
        logits = em(input_ids=tokens[:, a:b], attention_mask=mask, position_ids=positions, use_cache=True,
                    **{_cache_key(em): cache}).logits
        layers = len(cache.layers)
        for i, layer in enumerate(cache.layers):
            state.set(f"entropy.{i}.keys", layer.keys)
            state.set(f"entropy.{i}.values", layer.values)
        last = positions[:, -1]
        columns.append(normalized_entropy(logits))
    # keys that no row reads any more (lines every row has left) are dropped: attention spans the current lines
    read = mask.bool().any(0)
    first = int(read.long().argmax()) if bool(read.any()) else mask.shape[1]
    if first:
        mask = mask[:, first:]
        for i in range(layers):
            state.set(f"entropy.{i}.keys", state.get(f"entropy.{i}.keys")[:, :, first:])
            state.set(f"entropy.{i}.values", state.get(f"entropy.{i}.values")[:, :, first:])
    state.set("entropy_mask", mask)
    state.set("entropy_positions", last)
    H = torch.cat(columns, 1)
    return H if fresh else torch.cat([H.new_zeros(B, 1), H], 1)  # column 0 is then read from the state


def _reread_entropies(model, ids_BN: torch.Tensor, state: StateMixin) -> torch.Tensor:
    """[B, N + 1] entropies by re-reading the text since the batch's earliest current line start (any model)."""
    cfg = model.config
    N = ids_BN.shape[1]
    before = state.get("context")
    context = ids_BN if before is None else torch.cat([before.to(ids_BN.device), ids_BN], 1)
    H_BN1 = model.entropies(context)[:, context.shape[1] - N:]  # column 0: the entropy of the first new byte
    if cfg.reset_at_newline:  # keep the text from the batch's earliest current line start on
        T = context.shape[1]
        last_newline = torch.where(context == cfg.newline_id, torch.arange(T, device=context.device), -1).amax(1)
        context = context[:, int(last_newline.min()) + 1 :] if T else context
    state.set("context", context)
    return H_BN1


def decode_hidden_states(model, ids_BN: torch.Tensor, state: StateMixin, seen: int) -> torch.Tensor:
    """Final hidden states [B, N, D] of ``ids_BN``, the bytes after the ``seen`` ones the state holds."""
    cfg = model.config
    B, N = ids_BN.shape
    x = model.embed_bytes(ids_BN)
    if N == 0:
        return x
    if model.hash_ngrams is not None:
        width = max(cfg.hash_ngram_sizes) - 1
        tail = state.get("hash_tail")
        tail = ids_BN.new_zeros(B, width) if tail is None else tail.to(ids_BN.device)
        x = x + model.hash_ngrams(ids_BN, tail)
        both = torch.cat([tail, ids_BN + 1], 1)
        state.set("hash_tail", both[:, both.shape[1] - width:])
    x, window = model.ngram_conv.step(x, state.get("ngram"))
    state.set("ngram", window)
    for i, block in enumerate(model.encoder):
        x, carried = block(x, _lnn_state(state, f"encoder.{i}"))
        _keep_lnn_state(state, f"encoder.{i}", carried)

    starts_BN1 = _starts(model, ids_BN, state, seen)
    state.set("next_start", starts_BN1[:, N].clone())
    D, heads = x.shape[-1], cfg.num_attention_heads
    total = state.get("patch_sum")
    total = x.new_zeros(B, D) if total is None else total
    count = state.get("patch_bytes")
    count = x.new_zeros(B) if count is None else count
    latent = state.get("latent")
    latent = model.no_patch.expand(B, -1) if latent is None else latent
    patches = state.get("patches")
    patches = torch.zeros(B, dtype=torch.long, device=x.device) if patches is None else patches
    reads = []
    for i in range(N):
        total, count = total + x[:, i], count + 1
        ends = starts_BN1[:, i + 1]
        if bool(ends.any()):
            z = model.to_latent(total / count[:, None])
            for layer, block in enumerate(model.latent):
                keys, values = _latent_kv(state, layer, B, int(patches.max()) + 1, heads, z)
                z = block.step(z, keys, values, patches)
            z = model.latent_norm(z)
            latent = torch.where(ends[:, None], z, latent)
            patches = patches + ends.long()
            total = torch.where(ends[:, None], torch.zeros_like(total), total)
            count = torch.where(ends, torch.zeros_like(count), count)
        reads.append(latent)
    state.set("patch_sum", total)
    state.set("patch_bytes", count)
    state.set("latent", latent)
    state.set("patches", patches)

    y = x + model.from_latent(torch.stack(reads, 1))
    for i, block in enumerate(model.decoder):
        y, carried = block(y, _lnn_state(state, f"decoder.{i}"))
        _keep_lnn_state(state, f"decoder.{i}", carried)
    return model.norm(y)


def _latent_kv(state: StateMixin, layer: int, B: int, need: int, heads: int, like: torch.Tensor):
    """Layer ``layer``'s key and value buffers [B, capacity, H, K], grown (doubling) to hold ``need`` patches."""
    keys, values = state.get(f"latent.{layer}.keys"), state.get(f"latent.{layer}.values")
    have = 0 if keys is None else keys.shape[1]
    if need > have:
        grown = like.new_zeros(B, max(need, 2 * have, 16), heads, like.shape[-1] // heads)
        if keys is not None:
            grown_v = grown.clone()
            grown[:, :have], grown_v[:, :have] = keys, values
            keys, values = grown, grown_v
        else:
            keys, values = grown, grown.clone()
        state.set(f"latent.{layer}.keys", keys)
        state.set(f"latent.{layer}.values", values)
    return keys, values
