"""Entropy patching of the byte latent model as one opaque torch op, so a compiled training step is one graph.

Where patches start depends on the data three ways that torch.compile cannot trace: the entropy model runs
each line alone (the segments come from ``tolist()``), the first training batch calibrates the threshold
(a bisection over Python floats), and BLT's max-size rule is a loop over bytes. The op ``entropy_patches``
does all three eagerly inside the graph (nothing of it needs a gradient) and returns tensors whose shapes the
graph knows: the [B, T + 1] starts and the [B, P] bytes per patch, with P (the patch count, at most T) an
unbacked size, so the latent sequence keeps its data-dependent length without a graph break and without
padding to a bound (a bound of T patches would be ~4x the latent work).

The op is a pure function of its tensors: the entropy model's weights come in as a list and run in a weightless
copy of its structure (``torch.func.functional_call``), so no module is looked up by identity.
"""

from __future__ import annotations

import contextlib
import functools
import json

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from archlab.nn.byte_latent import calibrate_threshold, entropy_boundaries, normalized_entropy, patch_ids


@torch.no_grad()
def byte_entropies(model: nn.Module, ids_BT: torch.Tensor, bos_id: int, newline_id: int | None) -> torch.Tensor:
    """[B, T + 1] normalised next-byte entropies: column j predicts byte j from the bytes before it.

    With ``newline_id`` the context restarts after every newline (BLT): each line is run alone behind a BOS,
    so byte j's prediction sees only the bytes of its own line before j. Lines are batched right-padded (a
    causal LM's earlier positions never see the padding). ``model``: anything called as ``model(input_ids=)``
    that returns ``.logits``.
    """
    B, T = ids_BT.shape
    rows = ids_BT.tolist()
    segments: list[tuple[int, int, int]] = []  # (row, start, end): bytes [start, end) of one context
    for b, row in enumerate(rows):
        start = 0
        if newline_id is not None:
            for t, byte in enumerate(row):
                if byte == newline_id:
                    segments.append((b, start, t + 1))
                    start = t + 1
        segments.append((b, start, T))  # the last context also predicts the byte after the sequence
    width = max(end - start for _, start, end in segments) + 1
    inputs = torch.full((len(segments), width), bos_id, dtype=torch.long, device=ids_BT.device)
    for i, (b, start, end) in enumerate(segments):
        inputs[i, 1 : 1 + end - start] = ids_BT[b, start:end]
    H_SW = normalized_entropy(model(input_ids=inputs).logits)
    H = ids_BT.new_zeros(B, T + 1, dtype=torch.float32)
    for i, (b, start, end) in enumerate(segments):
        take = end - start + (1 if end == T else 0)
        H[b, start : start + take] = H_SW[i, :take]
    return H


def build_entropy_model(entropy_config: dict, vocab_size: int, device: torch.device | str | None = None) -> nn.Module:
    """The frozen entropy model of this config, in eval mode (``device="meta"``: its structure only)."""
    options = {k: v for k, v in entropy_config.items() if k not in ("architectures", "transformers_version", "dtype")}
    model_type = options.pop("model_type")
    options.setdefault("vocab_size", vocab_size)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **options))
    model.requires_grad_(False)
    return model.eval()


def entropy_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The weights the op runs the entropy model with, in ``_structure``'s order (parameters, then buffers)."""
    return [p for _, p in model.named_parameters()] + [b for _, b in model.named_buffers()]


@functools.lru_cache(maxsize=8)
def _structure(config_json: str) -> tuple[nn.Module, list[str]]:
    """The entropy model's structure without weights (meta device) and the names ``entropy_tensors`` fill."""
    spec = json.loads(config_json)
    model = build_entropy_model(spec["entropy_config"], spec["vocab_size"], device="meta")
    return model, [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]


def structure_key(entropy_config: dict, vocab_size: int) -> str:
    return json.dumps({"entropy_config": entropy_config, "vocab_size": vocab_size}, sort_keys=True)


def _entropies(ids: torch.Tensor, weights: list[torch.Tensor], structure: str, bos_id: int,
               newline_id: int | None) -> torch.Tensor:
    model, names = _structure(structure)
    if len(names) != len(weights):
        raise ValueError(f"entropy model: {len(weights)} weights for a structure of {len(names)}")
    tensors = dict(zip(names, weights, strict=True))
    return byte_entropies(lambda **kw: torch.func.functional_call(model, tensors, (), kw), ids, bos_id, newline_id)


# Two ops, not one: Inductor loses track of an unbacked output size of an op that also mutates its inputs
@torch.library.custom_op("archlab::byte_latent_calibrate", mutates_args=("threshold", "calibrated"))
def calibrate_once(ids: torch.Tensor, threshold: torch.Tensor, calibrated: torch.Tensor, weights: list[torch.Tensor],
                   structure: str, bos_id: int, newline_id: int | None, rel_threshold: float | None,
                   max_patch_size: int, target_patch_size: float) -> None:
    """Unless ``calibrated``: set ``threshold`` so these bytes' patches have ``target_patch_size`` bytes on average."""
    if not bool(calibrated):
        H = _entropies(ids, weights, structure, bos_id, newline_id)
        threshold.fill_(calibrate_threshold(H, target_patch_size, rel_threshold, max_patch_size))
        calibrated.fill_(True)


@torch.library.custom_op("archlab::byte_latent_entropy_patches", mutates_args=())
def entropy_patches(ids: torch.Tensor, threshold: torch.Tensor, weights: list[torch.Tensor], structure: str,
                    bos_id: int, newline_id: int | None, rel_threshold: float | None,
                    max_patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch starts [B, T + 1] (bool) and bytes per patch [B, max(P, 1)] (long) by BLT's rules."""
    H = _entropies(ids, weights, structure, bos_id, newline_id)
    starts = entropy_boundaries(H, float(threshold), rel_threshold, max_patch_size)
    B, T = ids.shape
    pid, _, counts = patch_ids(starts)
    P = int(counts.max()) if T else 0
    sizes = torch.zeros(B, max(P, 1), dtype=torch.long, device=ids.device)
    return starts, sizes.scatter_add_(1, pid, torch.ones_like(pid))


@entropy_patches.register_fake
def _(ids, threshold, weights, structure, bos_id, newline_id, rel_threshold, max_patch_size):
    B, T = ids.shape
    # every patch holds at least one of the T bytes, and position 0 always starts one
    P = torch.library.get_ctx().new_dynamic_size(min=1, max=T) if T > 1 else 1
    return ids.new_empty(B, T + 1, dtype=torch.bool), ids.new_empty(B, P, dtype=torch.long)
