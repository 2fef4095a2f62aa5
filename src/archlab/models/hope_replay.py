"""HOPE's training forward in two passes: online without autograd, then the whole sequence at once with it.

The online contract (:mod:`archlab.models.hope`) makes every model chunk wait for the previous chunk's writes,
and those wait for its logits at the top of the model: a 512-token sequence at chunk 8 is 64 sequential passes
through every layer. Run with autograd, each pass records a graph of hundreds of small ops, and the backward
walks them all again.

But with the writes fixed, nothing in the model is sequential any more: a write is stop-gradient (its features
and the teach signal are detached), so each fast memory's per-context weights are constants that change every
``period`` tokens. ``replay_forward`` therefore

1. runs the online forward under ``torch.no_grad``, recording, for every fast memory of every layer, the weights
   ``meta + delta`` each model chunk read (and, where a learned self-modifier shapes the Titans memory's error,
   what each write was computed from);
2. keeps, from each chunk's teach signal, the tokens' loss and its gradients w.r.t. the logits and the head input
   (:class:`LossRecord`): the replay's loss is that record (:class:`_RecordedLoss`), no log-softmax over the
   ``[B, T, vocab]`` logits;
3. runs the model once more over the whole sequence with autograd: attention over all tokens in one call, and
   each fast memory read as one batched matmul per MLP layer over its blocks of ``period`` tokens with the
   recorded weights, whose backward gives the meta weights the straight-through gradient
   (:func:`archlab.ops.cms.fast_mlp_read_blocked`). Where a learned
   self-modifier shapes the Titans writes, the read's backward also returns the gradient of every write's error
   (:class:`_ReadWithWrites`), so the self-modifier learns as it does online.

On CPU the per-block buffers are kept from one step to the next (:class:`SlotPool`): a fresh ~100 MB of them
page-faults on every step, and PyTorch has no caching allocator there.

Same loss and gradients as the online forward with autograd (``train_replay: false``), held equal by
``tests/models/test_hope_replay.py``. The second pass keeps one set of weights per block and memory alive for
the backward, as the online graph does (it saves each read's delta). Used for training calls only: a call with a
cache, a padding mask, the per-layer teach signal, self-modifying Titans blocks (their DGD writes are not
replayed yet) or a learned self-modifier with the inner momentum or preconditioner runs the online forward.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from archlab.nn.loss import causal_lm_loss
from archlab.ops.cms import PARAMS, blocked_read_backward, fast_mlp_read_blocked


def can_replay(model, use_cache: bool, key_mask: torch.Tensor | None) -> bool:
    config = model.config
    if not (config.train_replay and torch.is_grad_enabled() and model.has_fast_state):
        return False
    if use_cache or key_mask is not None or config.per_layer_teach_signal or config.block_type == "hope_selfmod":
        return False
    if torch.compiler.is_compiling():
        return False
    learned = config.uses_titan() and config.selfmod == "learned"
    return not (learned and (config.inner_momentum or config.inner_precond))


def _fast_memories(layer) -> list:
    memories = [layer.titan.mem] if layer.titan is not None else []
    return memories + (list(layer.cms.levels) if layer.cms is not None else [])


def _learned_titan(layer):
    titan = layer.titan
    return titan if titan is not None and titan.mode == "learned" and titan.selfmod is not None else None


def _storage_users(tensor: torch.Tensor) -> int | None:
    count = getattr(torch._C, "_storage_Use_Count", None)
    return count(tensor.untyped_storage()._cdata) if count is not None else None


class SlotPool:
    """Slot buffers kept from one training step to the next on CPU, where a fresh buffer costs a page fault per 4 KiB
    on first touch (no caching allocator there). A buffer is handed out again only once nothing else holds its
    storage (the previous step's graph is gone); otherwise a new one is allocated."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, tuple[torch.Tensor, int | None]] = {}

    def take(self, key: tuple, shape: tuple[int, ...], device: torch.device,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        # handed out as a view: whoever keeps it (a saved tensor, a ctx attribute) counts as a user of the storage
        kept = self.buffers.get(key)
        if (kept is not None and kept[0].shape == shape and kept[0].dtype == dtype and kept[1] is not None
                and _storage_users(kept[0]) == kept[1]):
            return kept[0].view(shape)
        buf = torch.empty(shape, dtype=dtype, device=device)
        if device.type == "cpu":
            self.buffers[key] = (buf, _storage_users(buf))
        return buf.view(shape)


class Slots:
    """One buffer ``[K, B, ...]`` per weight of a fast memory: slot k holds the per-context weights ``meta + D_k``
    that block k reads (slot 0: those the call starts from). The recording pass reads the current slot in one
    matmul per MLP layer (no separate meta read) and writes every write straight into the next slot, so the replay
    reads all blocks from one tensor without stacking copies."""

    def __init__(self, mem, st, batch: int, tokens: int, pool: SlotPool | None = None):
        blocks = max(1, -(-tokens // mem.period))
        self.buffers = {}
        for k in PARAMS:
            meta = getattr(mem, k).detach()
            shape = (blocks, batch, *meta.shape)
            buf = (pool.take((id(mem), k), shape, meta.device) if pool is not None else
                   torch.empty(shape, dtype=torch.float32, device=meta.device))
            start = st.values.get(f"{mem.name}.d.{k}")  # a memorized delta
            torch.add(meta, start, out=buf[0]) if start is not None else buf[0].copy_(meta.expand_as(buf[0]))
            self.buffers[k] = buf
        self.filled = 1
        self._open = self._slot(0)

    def _slot(self, k: int) -> dict[str, torch.Tensor]:
        return {name: buf[k] for name, buf in self.buffers.items()}

    def current(self) -> dict[str, torch.Tensor]:
        """The weights the open block reads (and its write starts from)."""
        return self._open

    def full(self) -> bool:
        """Every block's slot is written: a further write would reach no token of this call."""
        return self.filled >= len(self.buffers["W1"])

    def next(self) -> dict[str, torch.Tensor] | None:
        """The slot the next write goes to (None past the last block: nothing in this call reads it)."""
        if self.full():
            return None
        self._open = self._slot(self.filled)
        self.filled += 1
        return self._open


class PrefixKV:
    """The recording pass's keys and values (no autograd): one buffer per layer, each chunk's attention reads the
    prefix as a view instead of a concatenated copy."""

    def __init__(self, tokens: int):
        self.tokens = tokens
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx not in self.buffers:
            b, h, _, d = keys.shape
            self.buffers[layer_idx] = (keys.new_empty(b, h, self.tokens, d), values.new_empty(b, h, self.tokens, d), [0])
        kbuf, vbuf, length = self.buffers[layer_idx]
        start, end = length[0], length[0] + keys.shape[2]
        kbuf[:, :, start:end] = keys
        vbuf[:, :, start:end] = values
        length[0] = end
        return kbuf[:, :, :end], vbuf[:, :, :end]


def start_recording(model, states, batch: int, tokens: int) -> None:
    """Called by the recording forward on its fresh layer states (memorized deltas already loaded)."""
    pool = model.__dict__.setdefault("_slot_pool", SlotPool())
    for layer, st in zip(model.model.layers, states, strict=True):
        st.record = {}
        for mem in _fast_memories(layer):
            st.record[f"{mem.name}:slots"] = Slots(mem, st, batch, tokens, pool)
        titan = _learned_titan(layer)
        if titan is not None:
            st.record[f"{titan.mem.name}:writes"] = []
            st.record[f"{titan.mem.name}:errors"] = []


@torch.no_grad()
def recorded_logits(model, hidden: torch.Tensor, start: int, end: int, tokens: int) -> torch.Tensor:
    """The recording pass's logits of tokens ``[start, end)``, written into one ``[B, tokens, vocab]`` buffer that the
    replay hands to the loss whole (concatenating the chunks' logits after would write and page-fault it again).
    Computed as ``W h^T``: with the few rows of one chunk, ~1.7x faster on CPU than ``h W^T``."""
    weight = model.lm_head.weight
    piece = torch.mm(weight, hidden.detach().flatten(0, 1).t()).t().view(*hidden.shape[:2], -1)
    if start == 0:
        shape = (hidden.shape[0], tokens, weight.shape[0])
        model._logits_buffer = model._slot_pool.take(("logits",), shape, piece.device, piece.dtype)
    return model._logits_buffer[:, start:end].copy_(piece)


class LossRecord:
    """The next-token loss, built by the recording pass chunk by chunk as each chunk's teach signal is computed.

    A chunk's teach signal is ``dCE_t/dh_t = (p_t - onehot_t) E`` for each token: on the way it has the token's
    loss (``-log p_t[target]``; from the logits' logsumexp where p underflows) and its gradient w.r.t. the logits
    (``p_t - onehot_t``), and the signal itself is the gradient w.r.t. the head input. Kept here, the replay's loss needs no log-softmax over
    the ``[B, T, vocab]`` logits, forward or backward, and no head-input GEMM (:class:`_RecordedLoss`).
    ``dCE/dlogits`` is token-major ``[T, B, vocab]`` so each chunk's slice is one contiguous GEMM operand.
    """

    def __init__(self, pool: SlotPool, batch: int, tokens: int, vocab: int, hidden: int, device: torch.device):
        self.grad_logits = pool.take(("grad_logits",), (tokens, batch, vocab), device)
        self.delta = torch.zeros(batch, tokens, hidden, device=device)
        self.loss = torch.zeros(batch, tokens, device=device)
        self.covered = 0  # tokens [0, covered) are recorded

    def teach_signal(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                     emb: torch.Tensor) -> torch.Tensor:
        """``HopeForCausalLM.teach_signal`` of the next ``t`` tokens, their loss and ``dCE/dlogits`` kept."""
        t, start = logits.shape[1], self.covered
        scores = logits.float().transpose(0, 1)  # [t, B, vocab], as the buffer
        index, keep = targets.t()[..., None].clamp(min=0), valid.t()[..., None]
        grad = self.grad_logits[start : start + t].copy_(torch.softmax(scores, -1))  # (logsumexp is 3x slower)
        picked = grad.gather(-1, index)
        loss = -torch.log(picked)
        if bool((picked < 1e-30).logical_and(keep).any()):  # a target's p underflows: its log from the logits
            loss = torch.logsumexp(scores, -1, keepdim=True) - scores.gather(-1, index)
        grad.scatter_add_(-1, index, -keep.to(grad.dtype))
        if not bool(valid.all()):
            grad.masked_fill_(~keep, 0.0)
        delta = torch.mm(grad.flatten(0, 1), emb).view(t, -1, emb.shape[1]).transpose(0, 1)
        self.delta[:, start : start + t] = delta
        self.loss[:, start : start + t] = loss.masked_fill_(~keep, 0.0).squeeze(-1).t()  # not * keep: -log 0 = inf
        self.covered = start + t
        return delta


class _RecordedLoss(torch.autograd.Function):
    """``causal_lm_loss(hidden @ weight^T, labels)`` from a complete :class:`LossRecord`: the mean of the recorded
    per-token losses; backward, ``delta / N`` to the head input and ``(p - onehot)^T hidden / N`` to the weight."""

    @staticmethod
    def forward(ctx, hidden, weight, record: LossRecord, count: int):
        ctx.save_for_backward(hidden, record.grad_logits, record.delta)
        ctx.count, ctx.weight_dtype = count, weight.dtype
        return record.loss.sum() / count

    @staticmethod
    def backward(ctx, grad):
        hidden, grad_logits, delta = ctx.saved_tensors
        scale = grad.float() / ctx.count
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (delta * scale).to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            tokens = hidden.detach().float().transpose(0, 1).reshape(grad_logits.shape[0] * grad_logits.shape[1], -1)
            grad_weight = torch.mm(grad_logits.flatten(0, 1).t(), tokens).mul_(scale).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None


def _reads_match_blocks(reads: list[tuple[int, dict]], slots: Slots, period: int, tokens: int) -> bool:
    """Every block of ``period`` tokens read its own slot (the recording pass kept the online contract)."""
    position, blocks = 0, slots.buffers["W1"]
    for count, weights in reads:
        block = position // period
        if block != (position + count - 1) // period:
            return False
        if weights["W1"].data_ptr() != blocks[block].data_ptr():
            return False
        position += count
    return position == tokens


class _ReadWithWrites(torch.autograd.Function):
    """A Titans memory read over the whole sequence whose recorded weights came from writes with a learned error.

    Block k reads ``W0 + D_k`` with ``D_k = D_0 - lr * sum_{j<k} grads(e_j)`` (write j made of block j's tokens);
    the weights ``W0 + D_k`` were recorded, so the forward is :func:`fast_mlp_read_blocked`. A write is linear in its
    error with stop-gradient features, so ``dL/de_j`` is a sum over the tokens of later blocks, computed here as
    a masked product over token pairs (as linear attention's dual form), never as per-block weight gradients.
    """

    @staticmethod
    def forward(ctx, n, W1, b1, W2, b2, e, weights, writes, lr, block):
        meta = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
        y, z = fast_mlp_read_blocked(n, meta, weights, block, with_preactivation=True)
        # saved tensors, not ctx attributes: released by the backward even while the graph's nodes live on
        ctx.save_for_backward(n, z, e, *writes, weights["W1"], weights["W2"])
        ctx.lr, ctx.block = lr, block
        return y

    @staticmethod
    def backward(ctx, gy):
        n, z, e, wn, wz, wh, w2, weights_1, weights_2 = ctx.saved_tensors
        block = ctx.block
        grads, gz, h = blocked_read_backward(gy, n, z, weights_1, weights_2, block)
        writes, b, period = wn.shape[:3]
        tokens = writes * period
        not_later = (torch.arange(n.shape[1], device=n.device) // block)[None, :] <= \
            (torch.arange(tokens, device=n.device) // period)[:, None]

        def pulled(keys_w, keys_r, values):  # sum over later-block tokens t of values_t (k_w . k_t + 1)
            w = keys_w.transpose(0, 1).reshape(b, tokens, -1)
            # in place on the [tokens, T] scores: an out-of-place mask or a broadcast beta term copies them again
            return torch.bmm(w, keys_r.transpose(1, 2)).add_(1.0).masked_fill_(not_later, 0.0).bmm(values)

        scale = -ctx.lr
        grad_gz = scale * pulled(wn, n, gz).view(b, writes, period, -1).transpose(0, 1)
        grad_e = torch.bmm(torch.ops.aten.gelu_backward(grad_gz, wz).flatten(0, 1), w2.flatten(0, 1).transpose(1, 2))
        grad_e = grad_e.view_as(e) + scale * pulled(wh, h, gy).view(b, writes, period, -1).transpose(0, 1)
        return (*grads, grad_e, None, None, None, None)


def _titan_read_with_graph(titan, record: dict, weights: dict[str, torch.Tensor], block: int):
    """The Titans memory's replayed read, differentiable w.r.t. the learned self-modifier through every write."""
    blocks = weights["W1"].shape[0]
    writes = record[f"{titan.mem.name}:writes"][: blocks - 1]
    if not writes:
        return lambda n, meta: fast_mlp_read_blocked(n, meta, weights, block)
    a, m, delta, mask = (torch.cat(parts, 1) for parts in zip(*record[f"{titan.mem.name}:errors"], strict=True))
    features = tuple(torch.stack(parts) for parts in zip(*writes, strict=True))  # n, z, h: [J, B, P, ...]
    count, b, period = features[0].shape[:3]
    stacked = (*features, weights["W2"][:count])  # write j started from block j's weights: its slot, not a copy
    if period != block:
        return None

    def read(n, meta):
        from archlab.models.hope import exact
        with exact(n):
            e = delta + titan.selfmod(a, m, delta) * mask[..., None]
            e = e[:, : count * period].to(n.dtype).view(b, count, period, -1).transpose(0, 1)
            return _ReadWithWrites.apply(n, meta["W1"], meta["b1"], meta["W2"], meta["b2"], e, weights, stacked,
                                         titan.mem.lr, block)
    return read


def _replay_plan(layer, record: dict, tokens: int) -> dict | None:
    """``{memory name: read(n, meta) -> y}``, or None where the reads did not follow the blocks."""
    plan = {}
    titan = _learned_titan(layer)
    for mem in _fast_memories(layer):
        slots = record[f"{mem.name}:slots"]
        if not _reads_match_blocks(record.get(mem.name, []), slots, mem.period, tokens):
            return None
        weights, block = slots.buffers, mem.period
        if titan is not None and mem is titan.mem:
            read = _titan_read_with_graph(titan, record, weights, block)
            if read is None:
                return None
        else:
            def read(n, meta, weights=weights, block=block):
                return fast_mlp_read_blocked(n, meta, weights, block)
        plan[mem.name] = read
    return plan


def replay_forward(model, input_ids, inputs_embeds, labels, logits_to_keep: int) -> CausalLMOutputWithPast | None:
    """The training forward of the module docstring; None where the recorded reads cannot be replayed."""
    from archlab.models.hope import LayerState, _head_logits
    tokens = input_ids.shape[1]
    counted = {k: v.clone() for k, v in model._tel().items()}  # restored if the online forward has to run after all
    model._keep_states, model._recording = True, tokens
    if labels is not None and not logits_to_keep:
        weight = model.lm_head.weight
        pool = model.__dict__.setdefault("_slot_pool", SlotPool())
        model._loss_record = LossRecord(pool, input_ids.shape[0], tokens, weight.shape[0], weight.shape[1],
                                        weight.device)
    try:
        with torch.no_grad():  # forward, not __call__: the model's own hooks (FSDP's, a user's) fire once per call
            model.forward(input_ids=input_ids, inputs_embeds=inputs_embeds, labels=labels, use_cache=False)
        states, chunk_logits = model._last_states[0], model._recorded_logits
    finally:
        model._keep_states, model._recording, model._last_states, model._recorded_logits = False, 0, None, None
        model.__dict__.pop("_logits_buffer", None)  # left there by a recording that raised
        record = model.__dict__.pop("_loss_record", None)
    replay_states = []
    for layer, st in zip(model.model.layers, states, strict=True):
        plan = _replay_plan(layer, st.record, tokens)
        if plan is None:
            model._telemetry = counted
            return None
        replay = LayerState()
        replay.replay = plan
        replay_states.append(replay)
    del states
    x = model.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    work = DynamicCache(config=model.config)
    for layer, st in zip(model.model.layers, replay_states, strict=True):
        x = layer(x, st, work, 0, None)
    hidden = model.model.norm(x)
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    # the recording pass's logits are these logits (to rounding): reused, with the head's gradient attached
    logits = _head_logits(hidden, model.lm_head.weight, chunk_logits, logits_to_keep)
    loss = language_model_loss(hidden, model.lm_head.weight, logits, labels, record) if labels is not None else None
    return CausalLMOutputWithPast(loss=loss, logits=logits)


def online_loss_record(model, labels, logits_to_keep: int, use_cache: bool, key_mask) -> LossRecord | None:
    """A :class:`LossRecord` for a training call of the online forward (no replay: self-modifying Titans, the
    per-layer teach signal, ...) whose loss is the plain next-token loss of ``labels``; None otherwise."""
    if labels is None or logits_to_keep or use_cache or key_mask is not None or not torch.is_grad_enabled():
        return None
    if not model.has_fast_state or torch.compiler.is_compiling():
        return None
    weight = model.lm_head.weight
    pool = model.__dict__.setdefault("_slot_pool", SlotPool())
    return LossRecord(pool, labels.shape[0], labels.shape[1], weight.shape[0], weight.shape[1], weight.device)


def language_model_loss(hidden, weight, logits, labels, record: LossRecord | None) -> torch.Tensor:
    """The next-token loss of ``labels``: from the teach signals' record where it covers every token
    (:class:`_RecordedLoss`), else from the logits."""
    count = int((labels[:, 1:] != -100).sum())
    if record is not None and record.covered == labels.shape[1] and count and hidden.shape[1] == labels.shape[1]:
        return _RecordedLoss.apply(hidden, weight, record, count)
    return causal_lm_loss(logits, labels)
