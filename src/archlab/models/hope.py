"""HOPE / Nested Learning (seed 003): NoPE post-norm backbone with continuum memory (CMS) and Titans memories.

Backbone as the seed's: token embedding without positions, blocks, final LayerNorm, head tied to the
embedding. ``block_type``:

- ``transformer``:    a = LN(x + Attn(x)); y = LN(a + MLP(a))                   (no inner updates)
- ``hope_attention``: y = CMS(Attn(x))                                          (paper "HOPE-attention")
- ``hope_hybrid``:    a = Attn(x); m = TitanMemory(a); y = CMS(a + m)           (the seed's pilot)
- ``titan``:          a = Attn(x); y = LN(a + TitanMemory(a))                    (the TITAN baseline, no CMS)
- ``hope_selfmod``:   y = CMS(SelfModTitans(x))                                  (no softmax attention)

Attention is causal SDPA with post-norm, optional L2-normalised q/k and an optional causal depthwise conv
before the projections. CMS is a chain of residual levels ``y <- y + FastMLP_l(LN_l(y))``; level l is
written every ``cms_periods[l]`` tokens (``archlab.ops.cms``).

**Online teach signal, one contract for training, evaluation and decoding.** The sequence is processed in
model chunks of ``online_chunk`` tokens at absolute positions (every period is a multiple of it). After a
chunk, its teach signal ``delta_t = dCE_t/dh_t`` at the head input (through the tied head, per token: the
gradient of the *summed*, not mean, loss) is computed once the next token is known, scaled by the scheduled
``teach_scale``, gated (token t writes only if ``||dCE_t/dh_t|| >= surprise_threshold``) and clipped per
token to ``teach_clip``; every fast memory adds the chunk's per-token gradient steps toward
``stopgrad(pred - delta)`` and writes at its period boundary. The targets are the next *input* tokens
(or ``labels`` where given: -100 writes nothing), so the forward needs no labels, is causal (a write that
used token t+1 reaches positions > t only) and is the same in training, scoring and ``generate``: a cached
decode continues the fast state exactly (the generic tests hold cached decoding equal to the full forward).
Padding (zeros in ``attention_mask``) writes nothing and is zeroed before the causal convs; the writes keep the
batch's period boundaries, so a left-padded row equals its unpadded run when its padding is a multiple of every
period (otherwise its writes fall that many tokens earlier in its text; lm-eval-style scoring in archlab checks
a padded batch against one-by-one scoring and falls back to it).
Writes never touch the meta parameters: they are per-context deltas kept in the HF ``Cache``
(``archlab.nn.cache.states_of``), and a read uses ``meta + delta`` so the meta-initialisation gets the outer
gradient (the seed's "fast + (meta - stopgrad(meta))").

**Training runs in two passes** (``train_replay``, default true; ``archlab.models.hope_replay``): the online
forward without autograd records what every fast memory read, then the whole sequence runs once more with
autograd, each memory read as batched matmuls over its blocks of ``period`` tokens; the loss and its gradient at the
head come from the first pass's teach signals (``dCE_t/dh_t`` is the teach signal). Same loss and gradients as the
online forward with autograd (``train_replay: false``, also what a cached, padded or per-layer-teach call runs);
forward hooks on the blocks fire in both passes.

**Per-layer teach signal** (``per_layer_teach_signal``, the seed's option): block l's memories write with
``delta_l = dCE/dh_l`` at the block's own output instead of the head-input signal, by autograd through the later
blocks of the same model chunk (the chunk's summed CE; gate and telemetry stay on the head signal, scale and clip
apply per layer). It needs the whole sequence in one call (no cache: a chunk's graph does not outlive the call).

**SelfModifier.** In hybrid/TITAN blocks the Titans memory writes the error ``delta + s`` with
``s = SelfModifier([a; m; delta])``. ``selfmod: learned`` (default) keeps ``s`` in the graph, so the
self-modifier learns through the effect of its writes on later tokens' loss. The public code's
self-modifier never receives a gradient (its output only enters a detached target): ``selfmod: frozen``
reproduces that (output detached, parameters stay at their initialisation); ``selfmod: none`` writes the
teach signal alone ("teach-only").

**Inner optimiser** (CMS levels and the Titans memory): a write is ``W <- W - lr * g`` by default;
``inner_momentum`` (beta) and ``inner_precond`` switch on the seed's ``deep_momentum`` (an EMA of the step, kept
per context beside the deltas) and its rank-1 preconditioner (the input-side gradient projected off the
period's unit mean input), ``archlab.ops.inner_optim``.

**Test-time memorization** (``archlab.evals.lib.memorize``): ``memorize(ids)`` runs the forward over context
tokens only, flushes the open chunks and keeps the resulting fast state (deltas; whole weights for self-modifying
Titans) as the model's memory; later forwards (and ``generate``) start from it; ``reset_memory()`` forgets it.

**Precision.** Fast memories read and write in fp32 (:func:`exact`), under autocast too. A model whose weights
are half precision (``torch_dtype=torch.bfloat16``) runs as under autocast in that dtype, its fast memories still
in fp32.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from archlab.nn.cache import cache_length, states_of
from archlab.ops.cms import (
    PARAMS,
    chunk_bounds,
    fast_mlp_grads,
    fast_mlp_read,
    fast_mlp_read_split,
    fast_mlp_step,
)
from archlab.ops.inner_optim import inner_update

BLOCK_TYPES = ("transformer", "hope_attention", "hope_hybrid", "titan", "hope_selfmod")
SELFMOD_MODES = ("learned", "frozen", "none")
TELEMETRY = ("gate_tokens", "gate_hit", "updates_applied", "updates_blocked")


class HopeConfig(PretrainedConfig):
    """Configuration of :class:`HopeForCausalLM` (the seed's ``model.*`` keys where one exists)."""

    model_type = "archlab_hope"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 8192,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        block_type: str = "hope_hybrid",
        qk_l2_norm: bool = False,
        attn_conv_size: int = 0,
        mlp_multiplier: int = 4,
        cms_periods: list[int] | None = None,
        cms_hidden_multiplier: int = 4,
        cms_lr: float = 3e-4,
        cms_level_scales: list[float] | None = None,
        titan_period: int | None = None,
        titan_hidden_multiplier: int = 4,
        titan_lr: float = 6e-4,
        inner_momentum: float = 0.0,
        inner_precond: bool = False,
        per_layer_teach_signal: bool = False,
        selfmod: str = "learned",
        selfmod_hidden_multiplier: int = 1,
        selfmod_chunk_size: int = 8,
        selfmod_chunk_size_memory: int = 64,
        selfmod_lr: float = 1e-3,
        selfmod_use_alpha: bool = True,
        selfmod_rank1_precond: bool = True,
        selfmod_momentum: float = 0.0,
        teach_scale: float = 0.1,
        teach_clip: float = 5.0,
        surprise_threshold: float = 0.0,
        online_chunk: int | None = None,
        train_replay: bool = True,
        max_position_embeddings: int = 1 << 20,
        norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        bos_token_id: int | None = None,
        eos_token_id: int | None = 0,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ):
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type '{block_type}' unknown; use one of {', '.join(BLOCK_TYPES)}")
        if selfmod not in SELFMOD_MODES:
            raise ValueError(f"selfmod '{selfmod}' unknown; use one of {', '.join(SELFMOD_MODES)}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if not tie_word_embeddings:
            raise ValueError("tie_word_embeddings must be true: the teach signal is taken through the tied head")
        for name, multiplier in (("mlp_multiplier", mlp_multiplier), ("cms_hidden_multiplier", cms_hidden_multiplier),
                                 ("titan_hidden_multiplier", titan_hidden_multiplier),
                                 ("selfmod_hidden_multiplier", selfmod_hidden_multiplier)):
            if multiplier < 1:
                raise ValueError(f"{name} {multiplier} must be >= 1 (the MLP's hidden width is it x hidden_size)")
        for name, lr in (("cms_lr", cms_lr), ("titan_lr", titan_lr), ("selfmod_lr", selfmod_lr)):
            if lr < 0:
                raise ValueError(f"{name} {lr} must be >= 0: a negative inner step ascends the inner loss")
        kwargs.pop("layer_types", None)  # derived below
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.block_type = block_type
        self.qk_l2_norm = qk_l2_norm
        self.attn_conv_size = attn_conv_size
        self.mlp_multiplier = mlp_multiplier
        self.cms_periods = list(cms_periods) if cms_periods is not None else [1, 4, 32, 128]
        self.cms_hidden_multiplier = cms_hidden_multiplier
        self.cms_lr = cms_lr
        self.cms_level_scales = list(cms_level_scales) if cms_level_scales else None
        self.titan_period = titan_period
        self.titan_hidden_multiplier = titan_hidden_multiplier
        self.titan_lr = titan_lr
        self.inner_momentum = inner_momentum
        self.inner_precond = inner_precond
        self.per_layer_teach_signal = per_layer_teach_signal
        if not 0.0 <= inner_momentum < 1.0:
            raise ValueError(f"inner_momentum {inner_momentum} must be in [0, 1) (an EMA coefficient)")
        self.selfmod = selfmod
        self.selfmod_hidden_multiplier = selfmod_hidden_multiplier
        self.selfmod_chunk_size = selfmod_chunk_size
        self.selfmod_chunk_size_memory = selfmod_chunk_size_memory
        self.selfmod_lr = selfmod_lr
        self.selfmod_use_alpha = selfmod_use_alpha
        self.selfmod_rank1_precond = selfmod_rank1_precond
        self.selfmod_momentum = selfmod_momentum
        self.teach_scale = teach_scale
        self.teach_clip = teach_clip
        self.surprise_threshold = surprise_threshold
        self.train_replay = train_replay
        self.max_position_embeddings = max_position_embeddings
        self.norm_eps = norm_eps
        self.initializer_range = initializer_range
        periods = self.fast_periods()
        if any(p < 1 for p in periods):
            raise ValueError(f"update periods must be >= 1, got {periods}")
        if self.cms_level_scales is not None and len(self.cms_level_scales) != len(self.cms_periods):
            raise ValueError(f"cms_level_scales has {len(self.cms_level_scales)} entries for "
                             f"{len(self.cms_periods)} CMS levels")
        # the largest chunk every period is a multiple of (the smallest period whenever it divides the others)
        self.online_chunk = online_chunk if online_chunk is not None else (math.gcd(*periods) if periods else None)
        if periods and (self.online_chunk < 1 or any(p % self.online_chunk for p in periods)):
            raise ValueError(f"online_chunk {self.online_chunk} must divide every update period {sorted(set(periods))}"
                             f" (a write can reach only later model chunks); set online_chunk to their gcd")
        self.layer_types = ["linear_attention" if block_type == "hope_selfmod" else "full_attention"] * num_hidden_layers
        super().__init__(tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    def uses_cms(self) -> bool:
        return self.block_type in ("hope_attention", "hope_hybrid", "hope_selfmod") and bool(self.cms_periods)

    def uses_titan(self) -> bool:
        return self.block_type in ("hope_hybrid", "titan")

    def fast_periods(self) -> list[int]:
        periods = list(self.cms_periods) if self.uses_cms() else []
        if self.uses_titan():
            periods.append(self.titan_period or (min(self.cms_periods) if self.uses_cms() else 16))
        if self.block_type == "hope_selfmod":
            periods += [self.selfmod_chunk_size, self.selfmod_chunk_size_memory]
        return periods


# ------------------------------------------------------------------------------------------------ parts
def exact(x: torch.Tensor):
    """Fast-memory reads and writes run in fp32 under autocast too: a write adds lr-sized steps that bf16 would
    round away, and CPU has no bf16 triangular solve (the DGD write's delta rule)."""
    if not torch.is_autocast_enabled(x.device.type):  # entering autocast costs as much as a small op; skip it
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


def fp32(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear or conv module's weight and bias in fp32, for a call inside :func:`exact` (no-ops for fp32 weights;
    bf16 weights, from ``torch_dtype=torch.bfloat16``, are cast in the graph)."""
    return module.weight.float(), module.bias.float() if module.bias is not None else None


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that also takes fp32 inputs with half-precision weights (a model loaded in bf16, whose fast
    memories read in fp32): the weights are cast up, as CPU's mixed-dtype kernel only takes them the other way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype != torch.float32:
            return F.layer_norm(x, self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return super().forward(x)


def padding_keep(key_mask: torch.Tensor | None, position: int, t: int) -> torch.Tensor | None:
    """``[B, t, 1]``: 1 for the chunk's real tokens, 0 for its padding (None: no padding mask)."""
    return None if key_mask is None else key_mask[:, position:position + t, None]


def unpadded(x: torch.Tensor, key_mask: torch.Tensor | None, position: int) -> torch.Tensor:
    """``x`` with padded positions zeroed, what a causal conv window holds before the first token: a left-padded
    row's convolutions then see what its unpadded run sees."""
    keep = padding_keep(key_mask, position, x.shape[1])
    return x if keep is None else x * keep.to(x.dtype)


class LayerState:
    """What one layer carries across model chunks inside a call (with its graph) and across calls (in the Cache)."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}       # fast deltas, conv window
        self.features: dict[str, list[torch.Tensor]] = {}  # per-token features buffered until their write
        self.derived: dict[str, dict[str, torch.Tensor]] = {}  # meta + delta, rebuilt after a write (not saved)
        self.record: dict[str, list] | None = None  # what each memory read and wrote (the replay's first pass)
        self.replay: dict[str, Any] | None = None  # per memory: read(n, meta) over the whole sequence (hope_replay)

    def add_feature(self, name: str, value: torch.Tensor, keep_graph: bool = False) -> None:
        self.features.setdefault(name, []).append(value if keep_graph or not value.requires_grad else value.detach())

    def take_features(self, name: str) -> torch.Tensor | None:
        parts = self.features.pop(name, None)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def load(self, holder) -> None:
        for key, value in holder.states.items():
            if key.startswith("f:"):
                self.features[key[2:]] = [value]
            elif not key.startswith("teach:"):
                self.values[key] = value

    def save(self, holder) -> None:
        for key in [k for k in holder.states if not k.startswith("teach:")]:
            holder.set(key, None)
        for key, value in self.values.items():
            holder.set(key, value)
        for key, parts in self.features.items():
            if parts:
                holder.set("f:" + key, torch.cat(parts, 1))


class FastMLP(nn.Module):
    """A fast-weight MLP memory (``archlab.ops.cms``): meta weights here, per-context deltas in a LayerState.

    Reads keep each token's features (input, pre-activation, activation); once its teach signal is known they
    wait, with the error, in a buffer until the period boundary, where one batched gradient over the whole
    period is written (the same sum the token-by-token definition accumulates: every token of a period reads the
    period-start weights). The per-context weights ``meta + delta`` are built once per write, not per read.
    """

    def __init__(self, name: str, dim: int, hidden: int, period: int, lr: float, beta: float = 0.0,
                 precond: bool = False):
        super().__init__()
        self.name, self.period, self.lr = name, period, lr
        self.beta, self.precond = beta, precond  # the inner optimiser (archlab.ops.inner_optim)
        self.W1 = nn.Parameter(torch.empty(hidden, dim))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.W2 = nn.Parameter(torch.empty(dim, hidden))
        self.b2 = nn.Parameter(torch.zeros(dim))

    def deltas(self, st: LayerState) -> dict[str, torch.Tensor] | None:
        if f"{self.name}.d.W1" not in st.values:
            return None
        return {k: st.values[f"{self.name}.d.{k}"] for k in PARAMS}

    def meta(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).float() for k in PARAMS}  # fp32 as the reads (a no-op for fp32 weights)

    def read(self, n: torch.Tensor, st: LayerState) -> torch.Tensor:
        # online: meta (shared) and delta (per context) read apart: the meta weights' gradient is one GEMM over
        # every token of the chunk instead of a per-context weight gradient summed over the batch, and no
        # per-context ``meta + delta`` copy is written (straight-through: the delta carries no graph to meta).
        # The replay's recording pass has no graph: it reads slots that hold ``meta + delta`` (hope_replay)
        n = n.float()  # kept as a feature too: the write's GEMMs take it with fp32 errors and weights
        if st.replay is not None:  # the whole sequence at once, each block with the weights it read online
            with exact(n):
                return st.replay[self.name](n, self.meta())
        with exact(n):
            if st.record is not None:  # hope_replay's recording pass: one read of the materialised meta + delta
                weights = st.record[f"{self.name}:slots"].current()
                st.record.setdefault(self.name, []).append((n.shape[1], weights))
                y, z, h = fast_mlp_read(n, weights)
            else:
                y, z, h = fast_mlp_read_split(n, self.meta(), self.deltas(st))
        st.add_feature(f"{self.name}.n", n)
        st.add_feature(f"{self.name}.z", z)
        st.add_feature(f"{self.name}.h", h)
        return y

    def write(self, st: LayerState, e: torch.Tensor, position: int, telemetry: dict[str, torch.Tensor],
              flush: bool = False) -> None:
        """Queue the pending tokens with their error ``e``; write at a period boundary (or when flushing)."""
        name = self.name
        parts = [st.features.pop(f"{name}.{k}", None) for k in "nzh"]
        if parts[0]:
            for k, part in zip("nzh", parts, strict=True):
                st.features.setdefault(f"{name}.q{k}", []).extend(part)
            st.add_feature(f"{name}.qe", e, keep_graph=True)
        if not (position % self.period == 0 or flush):
            return
        e = st.take_features(f"{name}.qe")
        if e is None:
            return
        written = e.detach().ne(0).flatten(1).any(1)
        applied = written.sum()
        telemetry["updates_applied"] += applied
        telemetry["updates_blocked"] += written.shape[0] - applied
        slot = None
        if st.record is not None and st.record[f"{name}:slots"].full() and f"{name}:writes" not in st.record:
            for k in "nzh":  # past the last block: nothing in this call reads the write
                st.features.pop(f"{name}.q{k}", None)
            return
        n, z, h = (st.take_features(f"{name}.q{k}") for k in "nzh")
        e = e.to(n.dtype)
        if st.record is not None:  # hope_replay's recording pass: from the open slot's weights into the next slot
            slots = st.record[f"{name}:slots"]
            start = slots.current()
            w2 = start["W2"]
            if f"{name}:writes" in st.record:
                st.record[f"{name}:writes"].append((n, z, h))
            slot = slots.next()
            if slot is None:  # past the last block: nothing in this call reads the write
                return
        else:
            start = self.deltas(st)
            w2 = self.W2.detach().float().expand(n.shape[0], -1, -1)
            w2 = w2 + start["W2"].detach() if start is not None else w2
        if self.beta or self.precond:
            grads = fast_mlp_grads(n, z, h, w2, e)
            prev = {k: st.values[f"{name}.m.{k}"] for k in PARAMS} if f"{name}.m.W1" in st.values else None
            grads, momentum = inner_update(grads, n.sum(1), prev, self.beta, self.precond)
            if momentum is not None:
                st.values.update({f"{name}.m.{k}": v for k, v in momentum.items()})
            if slot is not None:
                for k in PARAMS:
                    torch.add(start[k], grads[k], alpha=-self.lr, out=slot[k])
                return
            for k in PARAMS:
                step = -self.lr * grads[k]
                st.values[f"{name}.d.{k}"] = start[k] + step if start is not None else step
            return
        new = fast_mlp_step(n, z, h, w2, e, -self.lr, start, out=slot)
        if slot is None:
            st.values.update({f"{name}.d.{k}": v for k, v in new.items()})


class Attention(nn.Module):
    """Causal multi-head attention without positions, post-norm (LN(x + attn(x))), optional conv and q/k L2 norm."""

    def __init__(self, config: HopeConfig, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.layer_idx = layer_idx
        self.heads = config.num_attention_heads
        self.qk_l2_norm = config.qk_l2_norm
        self.conv_size = config.attn_conv_size
        self.conv = (nn.Conv1d(d, d, config.attn_conv_size, groups=d, bias=True) if config.attn_conv_size > 1
                     else None)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm = LayerNorm(d, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, st: LayerState, cache: Cache, position: int,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        u = x
        if self.conv is not None:  # causal depthwise conv over the inputs; the window is carried across chunks
            prev = st.values.get("conv")
            prev = prev if prev is not None else x.new_zeros(b, self.conv_size - 1, d)
            padded = torch.cat([prev, unpadded(x, key_mask, position)], 1)
            st.values["conv"] = padded[:, -(self.conv_size - 1):]
            u = self.conv(padded.transpose(1, 2)).transpose(1, 2)
        q, k, v = self.qkv(u).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scale = None
        if self.qk_l2_norm:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            scale = float(q.shape[-1]) ** 0.5  # cosine logits in [-sqrt(d), sqrt(d)]
        k, v = cache.update(k, v, self.layer_idx)
        s = k.shape[2]
        qpos = torch.arange(position, position + t, device=x.device)
        allowed = torch.arange(s, device=x.device)[None, :] <= qpos[:, None]
        if key_mask is not None:
            allowed = allowed[None] & key_mask[:, None, :s].bool()
            allowed = allowed | torch.eye(s, device=x.device, dtype=torch.bool)[-t:][None]  # padded rows: no NaN
            allowed = allowed[:, None]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
        return self.norm(x + self.out(o.transpose(1, 2).reshape(b, t, d)))


class SelfModifier(nn.Module):
    """s = MLP([a; m; delta]): a learned per-token correction of the error a Titans memory writes."""

    def __init__(self, dim: int, multiplier: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * dim, multiplier * dim), nn.GELU(), nn.Linear(multiplier * dim, dim))

    def forward(self, a: torch.Tensor, m: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a.float(), m.float(), delta.float()], -1)  # fp32 (called inside exact), whatever the weights
        return F.linear(self.net[1](F.linear(x, *fp32(self.net[0]))), *fp32(self.net[2]))


class TitanMemory(nn.Module):
    """m = LN(cap(M(a))): a fast MLP dim -> mult*dim -> dim whose per-token output norm is capped at 1.

    The cap applies in training and evaluation alike (the seed capped in training only), so what is
    evaluated is what was trained.
    """

    def __init__(self, config: HopeConfig, name: str):
        super().__init__()
        d = config.hidden_size
        period = config.titan_period or (min(config.cms_periods) if config.uses_cms() else 16)
        self.mem = FastMLP(name, d, config.titan_hidden_multiplier * d, period, config.titan_lr,
                           config.inner_momentum, config.inner_precond)
        self.norm = LayerNorm(d, eps=config.norm_eps)
        self.mode = config.selfmod
        self.selfmod = SelfModifier(d, config.selfmod_hidden_multiplier) if self.mode != "none" else None

    def forward(self, a: torch.Tensor, st: LayerState) -> torch.Tensor:
        u = self.mem.read(a, st)
        u = u / u.norm(dim=-1, keepdim=True).clamp(min=1.0)
        m = self.norm(u)
        st.add_feature(self.mem.name + ".a", a)
        st.add_feature(self.mem.name + ".m", m)
        return m

    def write(self, st: LayerState, delta: torch.Tensor, writes: torch.Tensor, position: int, telemetry,
              flush: bool = False) -> None:
        a, m = st.take_features(self.mem.name + ".a"), st.take_features(self.mem.name + ".m")
        if a is None:
            return
        e = delta
        if st.record is not None and f"{self.mem.name}:errors" in st.record:
            st.record[f"{self.mem.name}:errors"].append((a, m, delta, writes))
        if self.selfmod is not None:  # gated-out tokens write nothing, self-modifier correction included
            s = self.selfmod(a, m, delta) * writes[..., None]
            e = delta + (s.detach() if self.mode == "frozen" else s)
        self.mem.write(st, e, position, telemetry, flush)


class CMS(nn.Module):
    """Chain of residual fast-MLP levels y <- y + M_l(LN_l(y)), level l written every ``cms_periods[l]`` tokens."""

    def __init__(self, config: HopeConfig):
        super().__init__()
        d = config.hidden_size
        scales = config.cms_level_scales or [1.0] * len(config.cms_periods)
        self.levels = nn.ModuleList(
            FastMLP(f"cms{i}", d, config.cms_hidden_multiplier * d, p, config.cms_lr, config.inner_momentum,
                    config.inner_precond)
            for i, p in enumerate(config.cms_periods))
        self.norms = nn.ModuleList(LayerNorm(d, eps=config.norm_eps) for _ in config.cms_periods)
        self.scales = scales

    def forward(self, y: torch.Tensor, st: LayerState) -> torch.Tensor:
        for level, norm in zip(self.levels, self.norms, strict=True):
            y = y + level.read(norm(y), st)
        return y

    def write(self, st: LayerState, delta: torch.Tensor, position: int, telemetry, flush: bool = False) -> None:
        for level, scale in zip(self.levels, self.scales, strict=True):
            level.write(st, delta * scale, position, telemetry, flush)


class HopeBlock(nn.Module):
    def __init__(self, config: HopeConfig, layer_idx: int):
        super().__init__()
        self.kind = config.block_type
        d = config.hidden_size
        self.attn = Attention(config, layer_idx) if self.kind != "hope_selfmod" else None
        self.titan = TitanMemory(config, "titan") if config.uses_titan() else None
        self.cms = CMS(config) if config.uses_cms() else None
        if self.kind == "transformer":
            self.mlp = nn.Sequential(nn.Linear(d, config.mlp_multiplier * d), nn.GELU(),
                                     nn.Linear(config.mlp_multiplier * d, d))
        if self.kind in ("transformer", "titan"):
            self.norm = LayerNorm(d, eps=config.norm_eps)
        if self.kind == "hope_selfmod":
            from archlab.models.hope_selfmod import SelfModTitans
            self.selfmod_titans = SelfModTitans(config)

    def forward(self, x, st: LayerState, cache: Cache, position: int, key_mask) -> torch.Tensor:
        if self.kind == "hope_selfmod":
            y = self.selfmod_titans(x, st, position, key_mask)
            return self.cms(y, st) if self.cms is not None else y
        a = self.attn(x, st, cache, position, key_mask)
        if self.kind == "transformer":
            return self.norm(a + self.mlp(a))
        if self.kind == "hope_attention":
            return self.cms(a, st)
        if self.kind == "titan":
            return self.norm(a + self.titan(a, st))
        return self.cms(a + self.titan(a, st), st)

    def write(self, st: LayerState, delta, writes, position: int, telemetry, flush: bool = False) -> None:
        if self.kind == "hope_selfmod":
            self.selfmod_titans.write(st, delta, writes, position, telemetry, flush)
        if self.titan is not None:
            self.titan.write(st, delta, writes, position, telemetry, flush)
        if self.cms is not None:
            self.cms.write(st, delta, position, telemetry, flush)


def _pending_teach(teach: dict, next_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the chunks waiting for their teach signal, and their targets (the next token of each)."""
    logits, own = (parts[0] if len(parts) == 1 else torch.cat(parts, 1)
                   for parts in (teach.pop("logits"), teach.pop("labels")))
    return logits, torch.cat([own[:, 1:], next_target[:, None]], 1)


class _ReusedHead(torch.autograd.Function):
    """``hidden @ weight^T`` whose forward value was already computed (the per-chunk teach logits)."""

    @staticmethod
    def forward(ctx, hidden, weight, logits):
        ctx.save_for_backward(hidden, weight)
        return logits

    @staticmethod
    def backward(ctx, grad):
        hidden, weight = ctx.saved_tensors
        grad_hidden = grad_weight = None  # in the logits' dtype (autocast), returned in the inputs' dtypes
        if ctx.needs_input_grad[0]:
            grad_hidden = (grad @ weight.to(grad.dtype)).to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad.flatten(0, -2).transpose(0, 1) @ hidden.flatten(0, -2).to(grad.dtype)).to(weight.dtype)
        return grad_hidden, grad_weight, None


def _head_logits(hidden: torch.Tensor, weight: torch.Tensor, pieces: list[torch.Tensor],
                 keep: int) -> torch.Tensor:
    logits = torch.cat(pieces, 1) if len(pieces) > 1 else pieces[0]
    if keep:
        logits = logits[:, -keep:]
    return _ReusedHead.apply(hidden, weight, logits)


# ------------------------------------------------------------------------------------------------ models
class HopePreTrainedModel(PreTrainedModel):
    config_class = HopeConfig
    base_model_prefix = "model"
    _no_split_modules = ["HopeBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, FastMLP):
            nn.init.normal_(module.W1, mean=0.0, std=std)
            nn.init.normal_(module.W2, mean=0.0, std=std)
            nn.init.zeros_(module.b1)
            nn.init.zeros_(module.b2)
        elif hasattr(module, "reset_fast_parameters"):
            module.reset_fast_parameters(std)


class HopeModel(HopePreTrainedModel):
    def __init__(self, config: HopeConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(HopeBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.post_init()


class HopeForCausalLM(HopePreTrainedModel, GenerationMixin):
    """The HOPE / TITAN / transformer-baseline language model; see the module docstring for the contract."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    scheduled_attributes = ("teach_scale",)
    scheduled_ranges = {"teach_scale": (0.0, float("inf"))}  # a negative scale writes toward pred + delta: ascent

    def __init__(self, config: HopeConfig):
        super().__init__(config)
        self.model = HopeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.teach_scale = float(config.teach_scale)
        self._memory: dict[int, dict[str, torch.Tensor]] | None = None
        self._telemetry: dict[str, torch.Tensor] = {}
        self.post_init()

    @property
    def has_fast_state(self) -> bool:
        return bool(self.config.fast_periods())

    @property
    def compile_auto_opt_out(self) -> str:
        """Why ``train.torch_compile: auto`` leaves this model eager (empty: it may compile)."""
        if not self.has_fast_state:
            return ""
        return ("HOPE's online chunk loop unrolls into one graph per sequence (every layer once per model chunk), "
                "too large to compile; its training forward is batched by the replay instead")

    # ------------------------------------------------------------------ teach signal
    def teach_signal(self, logits: torch.Tensor, targets: torch.Tensor,
                     loss_record=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token ``dCE_t/dh_t`` at the head input (summed loss: no 1/N), and the valid-target mask.

        Tied head: logits = h E^T, so dCE/dh = (softmax(logits) - onehot(target)) E. Targets -100 give 0.
        ``loss_record`` (the replay's recording pass, :class:`archlab.models.hope_replay.LossRecord`): the tokens'
        ``dCE/dlogits`` go into its buffer, and their loss and signal are kept, for the replay's loss.
        """
        valid = targets != -100
        emb = self.lm_head.weight.detach().float()
        if loss_record is not None:
            return loss_record.teach_signal(logits, targets, valid, emb), valid
        # (p - onehot) E as p E - E[target]: no vocabulary-sized one-hot
        delta = torch.softmax(logits.float(), -1) @ emb - F.embedding(targets.clamp(min=0), emb)
        return delta * valid[..., None], valid

    def _scaled_teach(self, delta: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate on the per-token (summed-loss) signal norm, then scale by teach_scale and clip per token.

        Returns the signal and the tokens that write (valid target, through the gate, teach_scale != 0).
        """
        norm = delta.norm(dim=-1)
        gate = norm >= self.config.surprise_threshold
        tel = self._tel()
        tel["gate_tokens"] += valid.sum()
        tel["gate_hit"] += (valid & ~gate).sum()
        writes = gate & valid & (self.teach_scale != 0)
        return self._clip(delta * writes[..., None] * self.teach_scale), writes

    def _clip(self, delta: torch.Tensor) -> torch.Tensor:
        if self.config.teach_clip and self.config.teach_clip > 0:
            delta = delta * (self.config.teach_clip / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
        return delta

    def _tel(self) -> dict[str, torch.Tensor]:
        for k in TELEMETRY:
            if k not in self._telemetry:
                self._telemetry[k] = torch.zeros((), dtype=torch.long)
        return self._telemetry

    def inner_telemetry(self, reset: bool = True) -> dict[str, float]:
        """Counters since the last call: tokens gated, tokens blocked by the gate, fast writes applied/blocked."""
        tel = {k: int(v) for k, v in self._tel().items()}
        out: dict[str, float] = {f"inner/{k}": float(v) for k, v in tel.items()}
        out["inner/gate_hit_rate"] = tel["gate_hit"] / tel["gate_tokens"] if tel["gate_tokens"] else 0.0
        writes = tel["updates_applied"] + tel["updates_blocked"]
        out["inner/updates_applied_rate"] = tel["updates_applied"] / writes if writes else 0.0
        out["inner/teach_scale"] = float(self.teach_scale)
        if reset:
            self._telemetry = {}
        return out

    def _flush(self, states: list[LayerState], teach: dict, next_target: torch.Tensor, position: int,
               final: bool = False) -> None:
        """The pending chunk's teach signal is known (its last target is ``next_target``): write every memory."""
        logits, targets = _pending_teach(teach, next_target)
        delta, writes = self._scaled_teach(*self.teach_signal(logits, targets, teach.get("record")))
        deltas = [delta] * len(states)
        if self.config.per_layer_teach_signal:
            raw = self.layer_teach_signals(teach.pop("layer_outs"), targets)
            deltas = [self._clip(d * writes[..., None] * self.teach_scale) for d in raw]
        tel = self._tel()
        with exact(delta):
            for layer, st, d in zip(self.model.layers, states, deltas, strict=True):
                layer.write(st, d, writes, position, tel, flush=final)

    def layer_teach_signals(self, layer_outs: list[list[torch.Tensor]], targets: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer ``delta_l = dCE/dh_l`` at each block output ``h_l`` of the pending tokens (summed CE of their
        next tokens, through the later blocks of their model chunk, the final norm and the tied head; -100 targets
        give 0).

        ``layer_outs[c][l]`` is block l's output for pending model chunk c, with its graph.
        """
        flat = [h for chunk in layer_outs for h in chunk]
        with torch.enable_grad():
            last = [chunk[-1] for chunk in layer_outs]
            hidden = self.model.norm(torch.cat(last, 1) if len(last) > 1 else last[0])
            logits = F.linear(hidden, self.lm_head.weight.detach()).float()
            ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
            grads = torch.autograd.grad(ce, flat, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(h) if g is None else g.detach() for h, g in zip(flat, grads, strict=True)]
        per_chunk = [grads[i : i + len(layer_outs[0])] for i in range(0, len(grads), len(layer_outs[0]))]
        return [torch.cat(parts, 1).float() for parts in zip(*per_chunk, strict=True)]

    # ------------------------------------------------------------------ state in the cache
    def _load(self, cache: Cache, fresh: bool, batch: int) -> tuple[list[LayerState], dict]:
        states = [LayerState() for _ in self.model.layers]
        teach: dict[str, list[torch.Tensor]] = {}
        if fresh:
            if self._memory is not None:  # a fresh context starts from the memorized fast deltas
                for st, mem in zip(states, self._memory.values(), strict=True):
                    st.values.update({k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v
                                      for k, v in mem.items()})
            if getattr(self, "_recording", 0):
                from archlab.models.hope_replay import start_recording
                start_recording(self, states, batch, self._recording)
            return states, teach
        for i, st in enumerate(states):
            holder = states_of(cache, i)
            st.load(holder)
        holder = states_of(cache, 0)
        for key in ("logits", "labels"):
            value = holder.get("teach:" + key)
            if value is not None:
                teach[key] = [value]
        return states, teach

    def _save(self, cache: Cache, states: list[LayerState], teach: dict, added: int) -> None:
        for i, st in enumerate(states):
            holder = states_of(cache, i)
            st.save(holder)
            if self.config.block_type == "hope_selfmod":
                holder.seen_tokens += added
        holder = states_of(cache, 0)
        for key in ("logits", "labels"):
            holder.set("teach:" + key, torch.cat(teach[key], 1) if teach.get(key) else None)

    # ------------------------------------------------------------------ forward
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if input_ids is None:
            raise ValueError("HopeForCausalLM needs input_ids: the teach signal's targets are the next tokens")
        low = self.lm_head.weight.dtype
        if low in (torch.bfloat16, torch.float16) and not torch.is_autocast_enabled(input_ids.device.type):
            # half-precision weights (torch_dtype=bfloat16, .to(bfloat16)): the model runs as under autocast, the
            # fast memories reading and writing in fp32 (exact) as in mixed-precision training
            with torch.autocast(input_ids.device.type, dtype=low):
                return self.forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    cache=cache, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
                                    logits_to_keep=logits_to_keep, **kwargs)
        b, t = input_ids.shape
        if use_cache is None:
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        work = cache if use_cache else DynamicCache(config=self.config)
        if getattr(self, "_recording", 0):
            from archlab.models.hope_replay import PrefixKV
            work = PrefixKV(self._recording)
        position = cache_length(work) if use_cache else 0
        if self.config.block_type == "hope_selfmod" and use_cache:
            position = states_of(work, 0).seen_tokens
        states, teach = self._load(work, fresh=position == 0, batch=b)
        targets = labels if labels is not None else input_ids
        key_mask = None
        # compiled, a given mask is always applied: whether it pads is not read off the tensor (no graph break)
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            key_mask = attention_mask
            tail = attention_mask[:, -t:]
            # targets[:, i] teaches position i - 1: neither a padded token nor the one before it is taught, so the
            # last left pad does not write toward the first real token (an unpadded run has no such position)
            before = attention_mask[:, -t - 1:-1] if attention_mask.shape[1] > t else F.pad(tail[:, :-1], (1, 0), value=1)
            targets = targets.masked_fill((tail == 0) | (before == 0), -100)
        if not getattr(self, "_recording", False):
            from archlab.models.hope_replay import can_replay, online_loss_record, replay_forward
            if can_replay(self, use_cache, key_mask):
                out = replay_forward(self, input_ids, inputs_embeds, labels, logits_to_keep)
                if out is not None:
                    return out
            teach["record"] = online_loss_record(self, labels, logits_to_keep, use_cache, key_mask)
        else:
            teach["record"] = getattr(self, "_loss_record", None)
        chunk = self.config.online_chunk if self.has_fast_state else max(t, 1)
        per_layer = self.has_fast_state and self.config.per_layer_teach_signal
        if per_layer and use_cache:
            raise ValueError("per_layer_teach_signal needs the whole sequence in one call (a chunk's delta_l "
                             "backpropagates through its later blocks, which a cache does not keep); use_cache=False")
        # embedding and head run once over the whole call: per-chunk calls would each make a dense
        # vocabulary-sized weight gradient; the teach signal reads detached per-chunk logits
        embeds = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        outs, chunk_logits = [], []
        bounds = chunk_bounds(position, t, chunk)
        # split, not slices: the backward of one split is one concatenation, of each slice a full-size zero fill
        pieces = embeds.split([end - start for start, end in bounds], 1)
        for (start, end), x in zip(bounds, pieces, strict=True):
            pos = position + start
            if self.has_fast_state and pos % chunk == 0 and teach.get("logits"):
                self._flush(states, teach, targets[:, start], pos)
            layer_outs = []
            with torch.enable_grad() if per_layer else contextlib.nullcontext():
                for layer, st in zip(self.model.layers, states, strict=True):
                    x = layer(x, st, work, pos, key_mask)
                    layer_outs.append(x)
            if per_layer:  # kept, with the chunk's graph, until its teach signal is known
                teach.setdefault("layer_outs", []).append(layer_outs)
            x = self.model.norm(x)
            outs.append(x)
            if self.has_fast_state:
                if getattr(self, "_recording", 0):  # into one kept buffer, not concatenated ([B, T, vocab]) after
                    from archlab.models.hope_replay import recorded_logits
                    piece = recorded_logits(self, x, start, end, t)
                else:
                    with torch.no_grad():
                        piece = self.lm_head(x.detach())
                chunk_logits.append(piece)
                teach.setdefault("logits", []).append(piece)
                teach.setdefault("labels", []).append(targets[:, start:end])
        record = teach.pop("record", None)
        if record is not None and teach.get("logits"):  # the last chunk has no next token: its loss only
            self.teach_signal(*_pending_teach(teach, torch.full_like(input_ids[:, 0], -100)), record)
        if use_cache:
            self._save(work, states, teach, t)
        self._last_states = (states, teach, position + t) if getattr(self, "_keep_states", False) else None
        if getattr(self, "_recording", False):  # hope_replay's first pass: the recorded reads and the chunks' logits
            self._recorded_logits = [self.__dict__.pop("_logits_buffer")] if chunk_logits else []
            return CausalLMOutputWithPast()
        hidden = torch.cat(outs, 1)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        if self.has_fast_state and torch.is_grad_enabled():
            # the chunks' teach logits are these logits: reuse them, with the head's gradient attached
            logits = _head_logits(hidden, self.lm_head.weight, chunk_logits, logits_to_keep)
        else:
            logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            from archlab.models.hope_replay import language_model_loss
            loss = language_model_loss(hidden, self.lm_head.weight, logits, labels, record)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)

    # ------------------------------------------------------------------ test-time memorization
    @torch.no_grad()
    def memorize(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        """Write ``input_ids`` (context tokens only) into the fast memory; later forwards start from it.

        Memorizing again continues from the memory. The last token's teach signal needs the token after
        it, which memorize is never given: it writes nothing. Open chunks are flushed at the end.
        """
        if not self.has_fast_state:
            return
        self._keep_states = True
        try:
            self(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            states, teach, position = self._last_states
        finally:
            self._keep_states, self._last_states = False, None
        if teach.get("logits"):
            none = torch.full_like(input_ids[:, 0], -100)
            self._flush(states, teach, none, position, final=True)
        self._memory = {i: {k: v.detach() for k, v in st.values.items() if ".d." in k or ".w." in k}
                        for i, st in enumerate(states)}

    def reset_memory(self) -> None:
        self._memory = None
