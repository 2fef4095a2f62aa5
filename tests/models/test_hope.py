"""HOPE / TITAN (seed 003): teach signal, writes, self-modifier gradients, gate telemetry, memorization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.models import generic
from transformers import DynamicCache

from archlab.models import ARCHITECTURES, HopeConfig, HopeForCausalLM

VOCAB = 64


def build(name: str = "hope", **over) -> HopeForCausalLM:
    arch = ARCHITECTURES.get(name)
    torch.manual_seed(0)
    return HopeForCausalLM(HopeConfig(vocab_size=VOCAB, **{**arch.tiny_config, **over})).eval()


def test_teach_signal_equals_autograd_through_the_tied_head():
    model = build()
    h = torch.randn(2, 7, 32, requires_grad=True)
    targets = torch.randint(0, VOCAB, (2, 7))
    targets[0, 3] = -100
    logits = model.lm_head(h)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    (expected,) = torch.autograd.grad(loss, h)
    delta, valid = model.teach_signal(logits.detach(), targets)
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-5)
    assert not valid[0, 3] and valid.sum() == 13


def test_writes_change_later_outputs_only_and_leave_meta_weights_untouched():
    x = generic.tokens(VOCAB)
    on, off = build(), build(teach_scale=0.0)
    before = {n: p.clone() for n, p in on.named_parameters()}
    with torch.no_grad():
        a, b = on(input_ids=x).logits, off(input_ids=x).logits
    # the first write (period 2) lands after the chunk [0, 2) is known, i.e. from position 2 on
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    assert all(torch.equal(p, before[n]) for n, p in on.named_parameters())


@pytest.mark.parametrize("mode,learns", [("learned", True), ("frozen", False)])
def test_the_self_modifier_receives_gradients_unless_frozen_as_in_the_seed(mode, learns):
    model = build(selfmod=mode).train()
    x = generic.tokens(VOCAB)
    model(input_ids=x, labels=x).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "selfmod" in n]
    assert grads
    got = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert got == learns


def test_teach_only_has_no_self_modifier():
    assert not any("selfmod" in n for n, _ in build(selfmod="none").named_parameters())


def test_a_gate_that_blocks_everything_says_so_in_the_telemetry():
    model = build(surprise_threshold=1e9)
    with torch.no_grad():
        model(input_ids=generic.tokens(VOCAB))
    tel = model.inner_telemetry()
    assert tel["inner/gate_tokens"] > 0 and tel["inner/gate_hit_rate"] == 1.0
    assert tel["inner/updates_applied"] == 0 and tel["inner/updates_blocked"] > 0
    open_gate = build()
    with torch.no_grad():
        open_gate(input_ids=generic.tokens(VOCAB))
    tel = open_gate.inner_telemetry()
    assert tel["inner/gate_hit_rate"] == 0.0 and tel["inner/updates_applied"] > 0
    assert open_gate.inner_telemetry()["inner/gate_tokens"] == 0  # read resets


def test_memorize_changes_what_follows_and_reset_forgets():
    model = build()
    ctx, query = generic.tokens(VOCAB, batch=1, length=12, seed=3), generic.tokens(VOCAB, batch=1, length=6, seed=4)
    with torch.no_grad():
        plain = model(input_ids=query).logits
        model.memorize(ctx, torch.ones_like(ctx))
        after = model(input_ids=query).logits
        model.reset_memory()
        again = model(input_ids=query).logits
    assert not torch.allclose(plain, after)
    torch.testing.assert_close(plain, again)


def test_the_transformer_block_type_is_a_plain_causal_decoder():
    model = build(block_type="transformer")
    assert not model.has_fast_state
    generic.check_causal(model, VOCAB)
    generic.check_cached_decoding(model, VOCAB)


def test_periods_must_be_multiples_of_the_online_chunk():
    with pytest.raises(ValueError, match="online_chunk"):
        HopeConfig(cms_periods=[4, 6], online_chunk=4)


def test_the_default_online_chunk_is_the_gcd_of_the_periods():
    assert HopeConfig(cms_periods=[4, 6], titan_period=4).online_chunk == 2
    assert HopeConfig(cms_periods=[8, 32, 128, 512], titan_period=8).online_chunk == 8
    assert HopeConfig(block_type="hope_selfmod", cms_periods=[12, 36], selfmod_chunk_size=8).online_chunk == 4


@pytest.mark.parametrize("name,length,over", [
    ("hope", 13, {}), ("hope", 16, {}), ("titan", 11, {}), ("hope_attention", 9, {}), ("hope_selfmod", 13, {}),
    ("hope", 15, {"inner_momentum": 0.5, "inner_precond": True})])
def test_token_by_token_model_equals_the_chunked_fast_path(name, length, over):
    """online_chunk=1 (every token its own model chunk, writes still at the period boundaries) is the step-by-step
    reference of the batched path: same logits, loss and gradients, final fast state included (via memorize)."""
    x = generic.tokens(VOCAB, length=length, seed=5)
    runs = []
    for chunk in (1, None):
        model = build(name, online_chunk=chunk, **over).train()
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            model.memorize(x)
        runs.append((out.logits.detach(), grads, model._memory))
    (l1, g1, m1), (l2, g2, m2) = runs
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-5, rtol=1e-4, msg=n)
    for i in m1:
        assert m1[i].keys() == m2[i].keys() and m1[i]
        for k in m1[i]:
            torch.testing.assert_close(m1[i][k], m2[i][k], atol=1e-6, rtol=1e-5)


def test_the_stacked_self_modifying_memories_write_as_five_separate_dgd_memories():
    from archlab.models.hope import LayerState
    from archlab.models.hope_selfmod import GROUP, ResidualMemory, dgd_write
    model = build("hope_selfmod", selfmod_momentum=0.0)
    titans = model.model.layers[0].selfmod_titans
    g = torch.Generator().manual_seed(2)
    b, c, d = 2, 3, 32
    buf = {"k": F.normalize(torch.randn(b, c, d, generator=g), dim=-1), "v": torch.randn(b, c, d, generator=g),
           "eta": 0.1 * torch.rand(b, c, generator=g), "alpha": 0.9 + 0.1 * torch.rand(b, c, generator=g)}
    st = LayerState()
    metas = {key: torch.stack([getattr(titans.memories[m], key) for m in GROUP]).detach() for key in ("W1", "W2")}
    for key in ("W1", "W2"):  # a context that has been written before: meta + a delta
        st.values[f"sm.g.w.{key}"] = metas[key] + 0.01 * torch.randn(b, len(GROUP), d, d, generator=g)
    before = {key: st.values[f"sm.g.w.{key}"].clone() for key in ("W1", "W2")}
    titans._write(st, "g", buf)
    for i in range(len(GROUP)):
        new1, new2 = dgd_write(before["W1"][:, i], before["W2"][:, i], buf["k"], buf["v"], buf["eta"], buf["alpha"],
                               precond=True)
        torch.testing.assert_close(st.values["sm.g.w.W1"][:, i], new1, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(st.values["sm.g.w.W2"][:, i], new2, atol=1e-6, rtol=1e-5)
    # the stacked read is each memory's own residual MLP at its written weights
    x = torch.randn(b, c, d, generator=g)
    W1s, W2s = titans.weights(st, "g", b)
    stacked = ResidualMemory.apply(x.repeat_interleave(len(GROUP), 0), W1s, W2s)[0].view(b, len(GROUP), c, d)
    for i in range(len(GROUP)):
        own = ResidualMemory.apply(x, st.values["sm.g.w.W1"][:, i], st.values["sm.g.w.W2"][:, i])[0]
        torch.testing.assert_close(stacked[:, i], own, atol=1e-6, rtol=1e-5)


def test_the_inner_optimiser_changes_the_writes():
    x = generic.tokens(VOCAB, length=12, seed=6)
    with torch.no_grad():
        plain = build()(input_ids=x).logits
        momentum = build(inner_momentum=0.5)(input_ids=x).logits
        precond = build(inner_precond=True)(input_ids=x).logits
    torch.testing.assert_close(plain[:, :2], momentum[:, :2])
    assert not torch.allclose(plain, momentum) and not torch.allclose(plain, precond)
    with pytest.raises(ValueError, match="inner_momentum"):
        HopeConfig(inner_momentum=1.0)


@pytest.mark.parametrize("name", ["hope", "hope_selfmod"])
def test_per_layer_teach_signal_equals_autograd_at_each_block_output(name):
    """delta_l written after the first chunk = dCE/dh_l of that chunk's summed loss, by plain autograd."""
    model = build(name, per_layer_teach_signal=True, teach_scale=1.0, teach_clip=0.0)
    chunk = model.config.online_chunk
    x = generic.tokens(VOCAB, length=2 * chunk + 1, seed=7)
    written = {}
    for i, layer in enumerate(model.model.layers):
        original = layer.write

        def record(st, delta, writes, position, telemetry, flush=False, i=i, original=original):
            written.setdefault(i, delta.clone())
            return original(st, delta, writes, position, telemetry, flush)
        layer.write = record
    with torch.no_grad():
        model(input_ids=x)
    # the same chunk alone, fresh state: block outputs by hooks, their gradients by backward (online: the replay's
    # recording pass would call the hooks too)
    twin = build(name, train_replay=False)
    outs = []
    hooks = [layer.register_forward_hook(lambda m, a, out: outs.append(out)) for layer in twin.model.layers]
    for o in outs:
        o.retain_grad()
    logits = twin(input_ids=x[:, :chunk]).logits
    for h in hooks:
        h.remove()
    for o in outs:
        o.retain_grad()
    F.cross_entropy(logits.flatten(0, 1), x[:, 1 : chunk + 1].flatten(), reduction="sum").backward()
    assert len(written) == len(outs) == model.config.num_hidden_layers
    for i, o in enumerate(outs):
        torch.testing.assert_close(written[i], o.grad, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(written[0], written[len(outs) - 1])
    with pytest.raises(ValueError, match="per_layer_teach_signal"):
        model(input_ids=x, use_cache=True)


@pytest.mark.parametrize("block_type", ["hope_hybrid", "hope_selfmod", "titan"])
def test_bf16_autocast_trains_and_memorizes_with_fp32_fast_memories(block_type):
    """bf16 autocast (the trainer's default on CPUs with native bf16) runs training and memorize; the fast
    deltas stay fp32 and the loss tracks the fp32 one (the plan's evals failed on mixed dtypes once)."""
    model = build(block_type=block_type).train()
    ids = generic.tokens(VOCAB, batch=2, length=24, seed=5)
    fp32 = model(input_ids=ids, labels=ids).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()  # inside autocast on purpose: the fp32 ops' backwards must not be recast
        with torch.no_grad():
            model.memorize(ids[:1])
    assert torch.isfinite(loss) and abs(float(loss) - float(fp32)) < 0.05
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    deltas = [v for layer in model._memory.values() for v in layer.values()]
    assert deltas and all(v.dtype == torch.float32 for v in deltas)


@pytest.mark.parametrize("block_type", ["hope_hybrid", "hope_selfmod", "titan"])
def test_a_model_loaded_in_bf16_scores_trains_memorizes_and_decodes(block_type):
    """Half-precision weights (``torch_dtype=torch.bfloat16``, ``.to(torch.bfloat16)``; no autocast by the caller):
    the model runs as under autocast, its fast memories in fp32, and tracks the fp32 model."""
    model = build(block_type=block_type).train()
    ids = generic.tokens(VOCAB, batch=2, length=24, seed=5)
    with torch.no_grad():
        fp32 = model(input_ids=ids, labels=ids)
    model = model.to(torch.bfloat16)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()  # the training forward (the replay for the hybrids), then its backward
    assert out.logits.dtype == torch.bfloat16 and abs(float(out.loss) - float(fp32.loss)) < 0.05
    assert (out.logits.float() - fp32.logits).abs().max() < 0.1 * fp32.logits.abs().max()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        model.eval().memorize(ids[:1])
        full = model(input_ids=ids[:1]).logits
        cache = DynamicCache(config=model.config)
        parts = [model(input_ids=ids[:1, :5], cache=cache, use_cache=True).logits]
        parts += [model(input_ids=ids[:1, t : t + 1], cache=cache, use_cache=True).logits for t in range(5, 24)]
        generated = model.generate(ids[:1, :6], max_new_tokens=4, do_sample=False)
    assert torch.isfinite(full.float()).all() and generated.shape == (1, 10)
    torch.testing.assert_close(torch.cat(parts, 1).float(), full.float(), atol=0.05, rtol=0.05)
    assert all(v.dtype == torch.float32 for layer in model._memory.values() for v in layer.values())


def _selfmod_reference(titans, x: torch.Tensor) -> torch.Tensor:
    """Self-modifying Titans token by token: six separate memories at ``meta + delta`` (straight-through), each DGD
    write from the token loop of ``archlab.ops.dgd`` at its chunk end, the delta chained as ``delta + step`` with
    ``step = new - W`` (or its EMA with ``selfmod_momentum``)."""
    from archlab.models.hope_selfmod import GROUP, MEMORIES, ResidualMemory
    from archlab.ops.cms import gelu_grad
    from archlab.ops.dgd import dgd_reference
    b, t, d = x.shape
    c = titans.conv(F.pad(x.transpose(1, 2), (titans.conv_size - 1, 0))).transpose(1, 2)
    mems = {m: titans.memories[m] for m in MEMORIES}
    delta = {m: (torch.zeros(b, d, d), torch.zeros(b, d, d)) for m in MEMORIES}
    momentum = {m: (0.0, 0.0) for m in MEMORIES}
    pending = {"g": [], "memory": []}
    outs = []
    for i in range(t):
        W = {m: (mems[m].W1 + delta[m][0], mems[m].W2 + delta[m][1]) for m in MEMORIES}
        y = {m: ResidualMemory.apply(c[:, i : i + 1], *W[m])[0] for m in GROUP}
        k, v, q = F.normalize(y["k"], dim=-1), y["v"], F.normalize(y["q"], dim=-1)
        eta = F.softplus(titans.eta_readout(y["eta"])).squeeze(-1) * titans.eta_scale
        alpha = torch.sigmoid(titans.alpha_readout(y["alpha"])).squeeze(-1)
        outs.append(titans.norm(x[:, i : i + 1] + titans.out(ResidualMemory.apply(q, *W["memory"])[0])))
        for name, period in titans.periods.items():
            pending[name].append((k, v, eta, alpha))
            if (i + 1) % period:
                continue
            kc, vc, ec, ac = (torch.cat(parts, 1) for parts in zip(*pending[name], strict=True))
            pending[name] = []
            for m in GROUP if name == "g" else ("memory",):
                W1, W2 = (w.detach() for w in W[m])
                z = torch.bmm(kc, W2.transpose(1, 2))
                err = ResidualMemory.apply(kc, W1, W2)[0] - ResidualMemory.apply(vc, W1, W2)[0]
                u = torch.bmm(err, W1) * gelu_grad(z)
                new1, new2 = dgd_reference(W1, W2, kc, u, err, F.gelu(z), ec, ac, precond=True)
                step = tuple(titans.momentum * prev + new - w for prev, new, w in
                             zip(momentum[m], (new1, new2), (W1, W2), strict=True))
                momentum[m] = step
                delta[m] = (delta[m][0] + step[0], delta[m][1] + step[1])
    return torch.cat(outs, 1)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_self_modifying_titans_equal_six_separate_memories_written_token_by_token(momentum):
    """The stacked, chunked layer (one carried weight tensor per period, the closed-form DGD write) against six
    separate memories updated token by token: outputs and the gradient of every parameter and of the input,
    whose path through k, v, eta and alpha runs only through the writes."""
    from archlab.models.hope import TELEMETRY, LayerState
    model = build("hope_selfmod", hidden_size=16, num_attention_heads=2, selfmod_chunk_size=4,
                  selfmod_chunk_size_memory=8, selfmod_lr=0.5, selfmod_momentum=momentum).train()
    titans = model.model.layers[0].selfmod_titans
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # memories far from the identity, so that what they write moves the output
        for p in titans.memories.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    x = torch.randn(2, 13, 16, generator=g, requires_grad=True)
    results = []
    for run in ("chunked", "reference"):
        if run == "reference":
            y = _selfmod_reference(titans, x)
        else:
            st, tel, parts = LayerState(), {k: torch.zeros((), dtype=torch.long) for k in TELEMETRY}, []
            for start in range(0, x.shape[1], 4):
                if start:
                    titans.write(st, None, None, start, tel)
                parts.append(titans(x[:, start : start + 4], st, start))
            y = torch.cat(parts, 1)
        params = [x, *titans.parameters()]
        grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), params, allow_unused=True)
        results.append((y.detach(), grads))
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-4)
    names = ["input", *(n for n, _ in titans.named_parameters())]
    for name, a, b in zip(names, g1, g2, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert g1[names.index("eta_readout.weight")].abs().max() > 1e-5  # the writes carry the graph


@pytest.mark.parametrize("name", ["hope", "hope_attention", "titan", "hope_selfmod"])
def test_a_left_padded_row_reads_and_decodes_as_its_unpadded_run(name):
    """Padding writes nothing and enters no conv window: a row left-padded by a multiple of every update period
    (the tiny configs': 4) gives the logits of its unpadded run, in the prefill and in cached decoding. The last
    pad used to write toward the first real token, and the self-modifying memories wrote every pad."""
    model, pad = build(name), 4
    long, short = generic.tokens(VOCAB, batch=1, length=13, seed=2), generic.tokens(VOCAB, batch=1, length=9, seed=3)
    ids = torch.cat([long, F.pad(short, (pad, 0))])
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    steps = generic.tokens(VOCAB, batch=2, length=3, seed=4)

    def cached_run(ids, mask, steps):
        cache = DynamicCache(config=model.config)
        logits = [model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True).logits]
        for t in range(steps.shape[1]):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            logits.append(model(input_ids=steps[:, t:t + 1], attention_mask=mask, cache=cache, use_cache=True).logits)
        return torch.cat(logits, 1)

    with torch.no_grad():
        batched = cached_run(ids, mask, steps)
        alone = cached_run(short, torch.ones_like(short), steps[1:])
        first = cached_run(long, torch.ones_like(long), steps[:1])
    torch.testing.assert_close(batched[1, pad:], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[0], first[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["hope", "hope_selfmod"])
def test_memorizing_a_left_padded_batch_memorizes_each_row_as_alone(name):
    """memorize takes an attention_mask: a row left-padded by a multiple of every period memorizes what it does
    alone, so a later forward reads the same memory."""
    pad = 4
    long, short = generic.tokens(VOCAB, batch=1, length=13, seed=2), generic.tokens(VOCAB, batch=1, length=9, seed=3)
    ids = torch.cat([long, F.pad(short, (pad, 0))])
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    query = generic.tokens(VOCAB, batch=1, length=6, seed=4)
    batched, alone = build(name), build(name)
    with torch.no_grad():
        batched.memorize(ids, mask)
        alone.memorize(short, torch.ones_like(short))
        after_batched = batched(input_ids=query.expand(2, -1)).logits[1]
        after_alone = alone(input_ids=query).logits[0]
        untouched = build(name)(input_ids=query).logits[0]
    torch.testing.assert_close(after_batched, after_alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after_alone, untouched, atol=1e-4)  # the memory was written and is read
