"""Greedy generations for a fixed list of prompts, saved to samples.jsonl (seed 000's sanity check)."""

from __future__ import annotations

import torch
from pydantic import Field

from archlab.config import Config
from archlab.data import encode_document
from archlab.evals.base import EvalContext, EvalResult, register_eval


class SampleParams(Config):
    prompts: list[str] | None = Field(None, description="prompts to complete; default: the data's test prompts")
    num_prompts: int = Field(2, ge=1, description="how many test prompts when 'prompts' is not given")
    max_new_tokens: int = Field(48, ge=1, description="tokens generated per prompt")


@register_eval("generate_samples", SampleParams, metrics=("samples",))
def generate_samples(ctx: EvalContext, params: SampleParams) -> EvalResult:
    """Greedy completions of fixed prompts, written to samples.jsonl with their references."""
    if params.prompts is not None:
        cases = [{"prompt": p, "reference": None} for p in params.prompts]
    else:
        cases = list((ctx.data.test_prompts if ctx.data else [])[: params.num_prompts])
    tok, rows = ctx.tokenizer, []
    window = getattr(ctx.model.config, "max_position_embeddings", None) or 2048
    keep = max(1, window - params.max_new_tokens)
    for case in cases:
        # keep the end of a long prompt so prompt + completion fit the model's positions
        ids = torch.tensor([encode_document(tok, case["prompt"])])[:, -keep:]  # as training starts a document
        with torch.no_grad():
            out = ctx.model.generate(
                ids.to(ctx.device),
                attention_mask=torch.ones_like(ids).to(ctx.device),
                max_new_tokens=params.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        completion = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        rows.append({**case, "completion": completion})
    ctx.run.write_samples(rows)
    return EvalResult(metrics={"samples": float(len(rows))}, n=len(rows), details={"file": "samples.jsonl"})
