"""Checks every causal LM must pass, shared by the per-mixer and per-architecture generic tests.

Each takes a model factory (a fresh, deterministic, eval-mode model) and a vocabulary size.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, DynamicCache

LENGTH, CUT = 19, 11


def tokens(vocab: int, batch: int = 2, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def check_causal(model, vocab: int) -> None:
    """Changing tokens after position CUT never changes logits at or before CUT (and does change later ones)."""
    x = tokens(vocab)
    y = x.clone()
    y[:, CUT + 1 :] = tokens(vocab, length=LENGTH - CUT - 1, seed=7)
    with torch.no_grad():
        a, b = model(input_ids=x).logits, model(input_ids=y).logits
    torch.testing.assert_close(a[:, : CUT + 1], b[:, : CUT + 1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a[:, CUT + 1 :], b[:, CUT + 1 :])


def check_cached_decoding(model, vocab: int) -> None:
    """A prefill then one token at a time through one cache gives the logits of one full forward."""
    x = tokens(vocab)
    with torch.no_grad():
        full = model(input_ids=x).logits
        cache = DynamicCache(config=model.config)
        parts = [model(input_ids=x[:, :5], cache=cache, use_cache=True).logits]
        parts += [model(input_ids=x[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(5, LENGTH)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)


def check_generate(model, vocab: int) -> None:
    """Greedy ``generate`` (cached) continues the prompt with the argmax of the full forward; beams run too."""
    prompt = tokens(vocab, length=6)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6,
                             do_sample=False, pad_token_id=0)
        argmax = model(input_ids=out).logits.argmax(-1)
        beams = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, num_beams=3,
                               do_sample=False, pad_token_id=0)
        uncached = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, num_beams=3,
                                  do_sample=False, pad_token_id=0, use_cache=False)
    assert out.shape[1] == 12
    assert torch.equal(out[:, 6:], argmax[:, 5:-1])
    assert torch.equal(beams, uncached)


def check_save_load(model, vocab: int, folder) -> None:
    """``save_pretrained`` then ``AutoModelForCausalLM.from_pretrained`` gives the same logits."""
    model.save_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    x = tokens(vocab)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)


def check_gradients_reach_every_parameter(model, vocab: int) -> None:
    model.train()
    x = tokens(vocab)
    model(input_ids=x, labels=x).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"no gradient reaches {missing}"
