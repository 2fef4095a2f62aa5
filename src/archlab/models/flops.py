"""Training FLOPs per token, counted from the model itself.

``torch.utils.flop_counter.FlopCounterMode`` counts every matmul-like op the model really runs in one
forward + backward (linear layers including the LM head, attention scores and values through SDPA, the
matmuls of chunked recurrent ops, convolutions), so hand formulas such as 6N + 12 L d T cannot drift from
the code. Like nanoGPT's and torchtitan's MFU, causal attention is counted as the full T x T product (SDPA's
masked half is computed by the math kernel, and FLOP counters do not halve it), and elementwise work is not
counted. Measured once per (model, sequence length) and remembered for the process.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

_COUNTED: dict[tuple, float] = {}


def _sdpa_fwd(q, k, v) -> int:
    """2 B H Tq Tk D (scores) + 2 B H Tq Tk Dv (weighted values); shapes [B, H, T, D], K/V may have fewer heads."""
    b, h, tq, d = q
    tk, dv = k[-2], v[-1]
    return 2 * b * h * tq * tk * d + 2 * b * h * tq * tk * dv


def _cpu_flash(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return _sdpa_fwd(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 2 * _sdpa_fwd(query, key, value)  # dQ, dK, dV and the recomputed scores: twice the forward, as torch counts


def _custom_mapping() -> dict:
    """SDPA's CPU kernel, which torch's FLOP registry does not list (its CUDA kernels are listed)."""
    ops = torch.ops.aten
    mapping = {}
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_backward
    return mapping


def _model_key(model: nn.Module, seq_len: int) -> tuple:
    config = getattr(model, "config", None)
    text = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else type(model).__name__
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    digest = hashlib.sha1(json.dumps([text, trainable, type(model).__name__]).encode()).hexdigest()
    return digest, seq_len


def training_flops_per_token(model: nn.Module, seq_len: int, vocab_size: int | None = None,
                             device: torch.device | str | None = None) -> float:
    """FLOPs of one training token (forward + backward) at ``seq_len``, counted on a batch of one.

    Runs one forward + backward on random tokens without touching the caller's state: gradients are
    restored to what they were, the RNG is forked (dropout draws do not shift the run's stream), and the
    training/eval mode is put back.
    """
    key = _model_key(model, seq_len)
    if key in _COUNTED:
        return _COUNTED[key]
    from torch.utils.flop_counter import FlopCounterMode

    first = next(model.parameters())
    device = torch.device(device) if device is not None else first.device
    vocab = vocab_size or getattr(getattr(model, "config", None), "vocab_size", None) or 2
    saved_grads = {p: p.grad for p in model.parameters()}
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        ids = torch.randint(0, vocab, (1, seq_len), device=device)
        model.train()
        counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
        with counter:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
    model.train(was_training)
    for p, grad in saved_grads.items():
        p.grad = grad
    flops = counter.get_total_flops() / seq_len
    _COUNTED[key] = flops
    return flops
