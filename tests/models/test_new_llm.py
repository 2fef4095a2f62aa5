"""Seed 002's New-LLM: the fast time loop equals a hand-written step loop of the equations; sizes; decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from archlab.models import NewLLMConfig, NewLLMForCausalLM
from archlab.nn.cache import states_of
from archlab.nn.context_vector import LOOP_IMPLS, ContextVectorCell, context_loop, reference_loop


def hand_written_step(cell: ContextVectorCell, e, c):
    """The seed's equations with the weights read out one by one (independent of the module's code)."""
    x = torch.cat([e, c], -1)
    h = x
    for layer in cell.fnn:
        h = torch.relu(h @ layer.weight.T + layer.bias)  # eval mode: dropout is the identity
    d = cell.context_dim
    W, b = cell.context_heads.weight, cell.context_heads.bias
    f = torch.sigmoid(h @ W[:d].T + b[:d])
    i = torch.sigmoid(h @ W[d : 2 * d].T + b[d : 2 * d])
    delta = h @ W[2 * d :].T + b[2 * d :]
    u = f * c + i * delta
    mu, var = u.mean(-1, keepdim=True), u.var(-1, unbiased=False, keepdim=True)
    ln = (u - mu) / torch.sqrt(var + cell.eps) * cell.norm.weight + cell.norm.bias
    return h, ln.clamp(-cell.clip, cell.clip)


def make_cell(impl="eager", dropout=0.1, **kw):
    torch.manual_seed(0)
    args = dict(embed_dim=6, context_dim=5, hidden_size=12, num_layers=3, dropout=dropout, impl=impl)
    args.update(kw)
    cell = ContextVectorCell(**args).double()
    with torch.no_grad():  # non-trivial LayerNorm affine, so its order against the clip matters
        cell.norm.weight.uniform_(0.5, 3.0)
        cell.norm.bias.uniform_(-1, 1)
    return cell


@pytest.mark.parametrize("length", [1, 7, 13])
@pytest.mark.parametrize("impl", LOOP_IMPLS)
def test_fast_loop_equals_hand_written_steps(length, impl):
    cell = make_cell(impl).eval()
    e = torch.randn(3, length, 6, dtype=torch.double)
    c0 = torch.randn(3, 5, dtype=torch.double)
    h, c = context_loop(cell, e, c0)
    c_ref, hs = c0, []
    for t in range(length):
        h_t, c_ref = hand_written_step(cell, e[:, t], c_ref)
        hs.append(h_t)
    torch.testing.assert_close(h, torch.stack(hs, 1))
    torch.testing.assert_close(c, c_ref)
    h2, c2 = reference_loop(cell, e, c0)
    torch.testing.assert_close(h, h2)
    torch.testing.assert_close(c, c2)


@pytest.mark.parametrize("impl", LOOP_IMPLS)
def test_fast_loop_gradients_equal_the_reference(impl):
    cell = make_cell(impl).eval()
    e = torch.randn(2, 9, 6, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(2, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(2, 9, 12, dtype=torch.double)

    def grads(fn):
        h, c = fn(cell, e, c0)
        cell.zero_grad()
        e.grad = c0.grad = None
        ((h * w).sum() + (c**2).sum()).backward()
        return [e.grad.clone(), c0.grad.clone()] + [p.grad.clone() for p in cell.parameters()]

    for a, b in zip(grads(context_loop), grads(reference_loop), strict=True):
        torch.testing.assert_close(a, b)


def test_the_clip_comes_after_the_layernorm():
    """A LayerNorm gain of 12 pushes some entries past 10: the clip must still bound them (LN first, then clip)."""
    cell = make_cell(context_dim=64).eval()
    with torch.no_grad():
        cell.norm.weight.fill_(12.0)
        cell.norm.bias.zero_()
    _, c = context_loop(cell, torch.randn(4, 5, 6, dtype=torch.double))
    assert c.abs().max() == 10.0
    assert (c.abs() == 10.0).any() and (c.abs() < 10.0).any()
    # without the clip firing (gain 1) c is exactly a LayerNorm output: zero mean, unit variance per row
    with torch.no_grad():
        cell.norm.weight.fill_(1.0)
    _, c = context_loop(cell, torch.randn(4, 5, 6, dtype=torch.double))
    torch.testing.assert_close(c.mean(-1), torch.zeros(4, dtype=torch.double))
    torch.testing.assert_close(c.var(-1, unbiased=False), torch.ones(4, dtype=torch.double), atol=1e-4, rtol=0)


@pytest.mark.parametrize("impl", LOOP_IMPLS)
def test_dropout_is_active_in_training_only(impl):
    torch.manual_seed(1)
    e = torch.randn(2, 6, 6, dtype=torch.double)
    cell = make_cell(impl).train()
    a, _ = context_loop(cell, e)
    b, _ = context_loop(cell, e)
    assert not torch.allclose(a, b)  # dropout masks differ between calls
    assert (a == 0).float().mean() > 0.05
    cell.eval()
    torch.testing.assert_close(context_loop(cell, e)[0], context_loop(cell, e)[0])


def test_padded_positions_carry_the_context():
    cell = make_cell().eval()
    e = torch.randn(1, 6, 6, dtype=torch.double)
    padded = torch.cat([torch.randn(1, 3, 6, dtype=torch.double), e], 1)
    keep = torch.tensor([[False] * 3 + [True] * 6])
    h_pad, c_pad = context_loop(cell, padded, keep=keep)
    h, c = context_loop(cell, e)
    torch.testing.assert_close(c_pad, c)
    torch.testing.assert_close(h_pad[:, 3:], h)


@pytest.mark.parametrize(("layers", "context_dim", "expected"),
                         [(6, 256, 2_739_432), (1, 256, 1_426_152), (12, 512, 4_840_936)])
def test_parameter_counts_of_the_seed_models(layers, context_dim, expected):
    """The seed's 2.74M (L=6), ~1.4M (L=1) and 4.84M ('advanced': d_c 512, L 12), vocab 1000:
    embedding 256k + L FNN layers (first 512->512) + 513k head + three 512->d_c context heads + LayerNorm."""
    model = NewLLMForCausalLM(NewLLMConfig(vocab_size=1000, num_hidden_layers=layers, context_dim=context_dim))
    assert sum(p.numel() for p in model.parameters()) == expected


def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, embed_dim=16, context_dim=8, hidden_size=24, num_hidden_layers=2)
    cfg.update(kw)
    return NewLLMForCausalLM(NewLLMConfig(**cfg)).eval()


def test_model_logits_are_the_head_of_the_reference_hidden_states():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 11))
    with torch.no_grad():
        h, _ = reference_loop(model.cell, model.embed_tokens(ids))
        torch.testing.assert_close(model(input_ids=ids).logits, model.lm_head(h), atol=1e-5, rtol=1e-5)


def test_the_loss_scores_token_t_plus_1_from_position_t_and_skips_padding():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 8))
    labels = ids.clone()
    labels[1, 5:] = -100  # padded tail
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        logits = out.logits[:, :-1]
        keep = labels[:, 1:] != -100
        nll = F.cross_entropy(logits[keep], ids[:, 1:][keep])
    torch.testing.assert_close(out.loss, nll)


def test_cache_holds_the_context_and_generation_continues_from_it():
    model = tiny_model()
    prompt = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(input_ids=prompt, cache=cache, use_cache=True)
        _, c = model.cell(model.embed_tokens(prompt))
        torch.testing.assert_close(states_of(cache, 0).get("context"), c)
        assert cache.get_seq_length() == 7
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, min_new_tokens=5,
                             do_sample=False, pad_token_id=0)
        full = model(input_ids=out).logits.argmax(-1)
    assert torch.equal(out[:, 7:], full[:, 6:-1])


def test_left_padded_generation_equals_unpadded():
    model = tiny_model()
    prompt = torch.randint(1, 50, (1, 5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False,
                           pad_token_id=0)
        b = model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(a[:, 5:], b[:, 8:])


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="loop_impl"):
        NewLLMConfig(loop_impl="cuda")
    with pytest.raises(ValueError, match="num_hidden_layers"):
        NewLLMConfig(num_hidden_layers=0)


def test_fused_backward_with_padding_and_dropout_masks_equals_autograd():
    """The hand-written BPTT of impl='fused' against autograd through the equations, with given dropout masks
    and padded (carried) steps, in float64."""
    from archlab.nn.context_vector import fused_context_loop

    cell = make_cell("fused").train()
    b, t = 3, 8
    e = torch.randn(b, t, 6, dtype=torch.double)
    c0 = torch.randn(b, 5, dtype=torch.double)
    keep = torch.rand(b, t) > 0.3
    masks = (torch.rand(len(cell.fnn), t, b, 12, dtype=torch.double) > 0.2).double() / 0.8
    w_h, w_c = torch.randn(b, t, 12, dtype=torch.double), torch.randn(b, 5, dtype=torch.double)

    def autograd_loop(pre, c):
        hs = []
        for s in range(t):
            h = torch.relu(pre[:, s] + c @ cell.fnn[0].weight[:, 6:].T) * masks[0, s]
            for k, layer in enumerate(cell.fnn[1:]):
                h = torch.relu(layer(h)) * masks[k + 1, s]
            f, i, d = cell.context_heads(h).chunk(3, -1)
            new = cell.norm(torch.sigmoid(f) * c + torch.sigmoid(i) * d).clamp(-cell.clip, cell.clip)
            c = torch.where(keep[:, s, None], new, c)
            hs.append(h)
        return torch.stack(hs, 1), c

    def grads(run):
        cell.zero_grad()
        pre = (e @ cell.fnn[0].weight[:, :6].T + cell.fnn[0].bias).detach().requires_grad_()
        c = c0.clone().requires_grad_()
        h, c_out = run(pre, c)
        ((h * w_h).sum() + (c_out * w_c).sum()).backward()
        return [h.detach(), c_out.detach(), pre.grad, c.grad] + [p.grad.clone() for p in cell.parameters()
                                                                  if p.grad is not None]

    fused = grads(lambda pre, c: fused_context_loop(pre, c, keep, masks, cell.fnn[0].weight[:, 6:],
                                                    list(cell.fnn)[1:], cell))
    reference = grads(autograd_loop)
    assert len(fused) == len(reference)
    for a, r in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, r)
