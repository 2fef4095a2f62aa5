"""Measured speed: training and generation throughput, per-token latency (peak memory: memory.py)."""

from __future__ import annotations

import time

import torch
from pydantic import Field

from archlab.config import Config
from archlab.evals.base import ANY_OBJECTIVE, EvalContext, EvalResult, register_eval
from archlab.evals.lib.views import simple_view


class SpeedParams(Config):
    seq_len: int = Field(128, ge=2, description="sequence length of the timed batches")
    batch_size: int = Field(4, ge=1, description="batch size of the timed training steps")
    train_iters: int = Field(5, ge=1, description="timed forward+backward passes (after one warm-up)")
    gen_tokens: int = Field(32, ge=1, description="tokens generated for the generation timing")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _text_ids(ctx: EvalContext, batch: int, length: int) -> torch.Tensor:
    """Real held-out text, so bytes per second counts the bytes a tokenizer really packs into a token."""
    from archlab.evals.lib.texts import corpus_documents

    text = corpus_documents("wiki", ("validation",))
    ids = ctx.tokenizer.encode("\n\n".join(text)[: 32 * batch * length], add_special_tokens=False)
    ids = (ids * (1 + batch * length // max(len(ids), 1)))[: batch * length]
    return torch.tensor(ids, dtype=torch.long).view(batch, length).to(ctx.device)


def _bytes_of(ctx: EvalContext, ids: torch.Tensor) -> int:
    from archlab.evals.lib.ppl import byte_lengths

    return int(byte_lengths(ctx.tokenizer)[ids.flatten().cpu()].sum())


SPEED_METRICS = ("train_tokens_per_second", "train_bytes_per_second", "generate_tokens_per_second",
                 "generate_bytes_per_second", "latency_ms_per_token", "train_flops_per_second", "mfu")


@register_eval("speed", SpeedParams, metrics=SPEED_METRICS, objectives=ANY_OBJECTIVE)
def speed(ctx: EvalContext, params: SpeedParams) -> EvalResult:
    """Training and generation tokens/s and bytes/s, per-token latency, measured at a stated length."""
    model, device = ctx.model, ctx.device
    ids = _text_ids(ctx, params.batch_size, params.seq_len)
    model.train()
    for i in range(params.train_iters + 1):
        if i == 1:
            _sync(device)
            start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
    _sync(device)
    train_s = (time.perf_counter() - start) / params.train_iters
    model.zero_grad(set_to_none=True)
    model.eval()
    prompt = ids[:1, : min(16, params.seq_len)]
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, do_sample=False, pad_token_id=ctx.tokenizer.pad_token_id)
        _sync(device)
        start = time.perf_counter()
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=params.gen_tokens, min_new_tokens=params.gen_tokens,
            do_sample=False, pad_token_id=ctx.tokenizer.pad_token_id,
        )
        _sync(device)
    gen_s = time.perf_counter() - start
    generated = out.shape[1] - prompt.shape[1]
    tokens = params.batch_size * params.seq_len
    gen_bytes = len(ctx.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).encode("utf-8"))
    # MFU as nanoGPT / torchtitan report it: counted training FLOPs per token (every matmul, LM head and
    # attention included) x tokens/s, over this machine's measured fp32 matmul peak (the timed steps run fp32)
    from archlab.hardware import matmul_peak_flops
    from archlab.models.flops import training_flops_per_token

    flops_per_token = training_flops_per_token(model, params.seq_len, device=device)
    achieved = flops_per_token * tokens / train_s
    peak = matmul_peak_flops(device, torch.float32, at_least=achieved)
    return EvalResult(
        metrics={
            "train_tokens_per_second": tokens / train_s,
            "train_bytes_per_second": _bytes_of(ctx, ids) / train_s,
            "generate_tokens_per_second": generated / gen_s,
            "generate_bytes_per_second": gen_bytes / gen_s,
            "latency_ms_per_token": 1000 * gen_s / max(generated, 1),
            "train_flops_per_second": achieved,
            "mfu": achieved / peak,
        },
        n=params.train_iters,
        headline="train_tokens_per_second",
        details={"seq_len": params.seq_len, "batch_size": params.batch_size, "device": str(device),
                 "train_text": "embedded wiki validation text", "generate_prompt_tokens": int(prompt.shape[1]),
                 "generate_tokens": int(generated), "flops_per_token": flops_per_token,
                 "matmul_peak_flops": peak, "precision": "fp32",
                 "generate_bytes_note": "UTF-8 bytes of the decoded greedy output (an untrained model may "
                                        "emit special tokens with no bytes)"},
    )


simple_view("speed", "Speed (measured)",
            [("train tok/s", "train_tokens_per_second"), ("train bytes/s", "train_bytes_per_second"),
             ("gen tok/s", "generate_tokens_per_second"), ("gen bytes/s", "generate_bytes_per_second"),
             ("ms/token", "latency_ms_per_token")], details=("seq_len", "batch_size", "device"), order=100)
