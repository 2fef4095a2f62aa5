"""apply_graft on tiny models of every supported family: exactness at mu=0, causality, layouts, errors."""

from __future__ import annotations

import pytest
import torch
from tests.graft.conftest import FAMILIES, set_mag_weight, tiny_model, tokens
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from archlab.errors import ArchlabError
from archlab.graft import GraftConfig, apply_graft, find_attention_modules
from archlab.train.schedules import set_model_attribute

LAYOUTS = {"phi3": "qkv_proj/o_proj", "gpt2": "c_attn/c_proj"}


@pytest.mark.parametrize("family", FAMILIES)
def test_graft_equals_the_base_at_mu_zero_and_stays_causal(family):
    model = tiny_model(family)
    ids = tokens()
    with torch.no_grad():
        base = model(ids).logits
        names = [n for n, _ in model.named_parameters()]
        apply_graft(model, GraftConfig(operator="delta_product", mag_weight=0.0, chunk_size=4))
        assert torch.equal(model(ids).logits, base)
        set_mag_weight(model, 0.5)
        mixed = model(ids).logits
        changed = ids.clone()
        changed[:, 12:] = (changed[:, 12:] + 1) % 7
        later = model(changed).logits
    assert (mixed - base).abs().max() > 1e-3  # the memory really contributes
    assert torch.allclose(later[:, :12], mixed[:, :12], atol=1e-5)  # no peeking at future tokens
    base_names = {n.replace(".base_layer", "") for n in names}
    assert {n for n in base_names} <= {n.replace(".base_layer", "") for n, _ in model.named_parameters()}
    _, _, layout = find_attention_modules(model)[0]
    assert layout.name == LAYOUTS.get(family, "q_proj/k_proj/v_proj/o_proj")


def test_moe_experts_are_untouched_and_frozen():
    model = apply_graft(tiny_model("olmoe"), GraftConfig())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".self_attn." in n and "lora_" in n for n in trainable)
    assert not any("lora" in n for n, _ in model.named_parameters() if ".mlp." in n)


def test_gpt2_mlp_c_proj_gets_no_lora():
    model = apply_graft(tiny_model("gpt2"), GraftConfig())
    lora = {n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters() if "lora_" in n}
    assert lora and all(".attn." in n for n in lora)


def test_without_lora_only_the_attention_projections_train():
    model = apply_graft(tiny_model("llama"), GraftConfig(lora=False))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in "qkvo"}
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_scheduled_mag_weight_reaches_every_grafted_layer():
    model = apply_graft(tiny_model("qwen2"), GraftConfig(layers=[1], mag_weight=0.125))
    assert set_model_attribute(model, "mag_weight", 0.75) == 1
    memories = [m for m in model.modules() if hasattr(m, "mag_weight")]
    assert [m.mag_weight for m in memories] == [0.75]
    assert model.config.archlab_graft["layers"] == [1]


def test_gradients_flow_into_lora_through_the_memory():
    model = apply_graft(tiny_model("llama"), GraftConfig(mag_weight=1.0)).train()
    for name, p in model.named_parameters():  # LoRA B starts at zero; give it a value so A gets gradient too
        if "lora_B" in name:
            nn.init.normal_(p, std=0.1)
    ids = tokens()
    model(ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_non_causal_base_with_bidirectional_memory():
    model = tiny_model("llama")
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False  # a diffusion-LM-like base: every token sees every token
    ids = tokens()
    with torch.no_grad():
        base = model(ids).logits
        apply_graft(model, GraftConfig(bidirectional=True, mag_weight=0.0))
        assert torch.equal(model(ids).logits, base)
        set_mag_weight(model, 1.0)  # memory only: its output must depend on later tokens
        out = model(ids).logits
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 7
        assert (model(changed).logits[:, 0] - out[:, 0]).abs().max() > 1e-4
    assert model.config.use_cache is False


class _BertLikeAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)


def test_unsupported_layout_names_the_module_class():
    model = nn.Sequential(_BertLikeAttention())
    with pytest.raises(ArchlabError, match="unsupported attention layout in _BertLikeAttention"):
        apply_graft(model, GraftConfig())


def test_bad_layers_and_double_graft_are_clear_errors():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                         num_attention_heads=2))
    with pytest.raises(ArchlabError, match=r"graft.layers \[5\] out of range: the model has 2 attention layers"):
        apply_graft(model, GraftConfig(layers=[0, 5]))
    apply_graft(model, GraftConfig())
    with pytest.raises(ArchlabError, match="already grafted"):
        apply_graft(model, GraftConfig())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"operater": "delta_rule"}, "unknown key 'operater' .*did you mean 'operator'"),
        ({"operator": "delta_rul"}, "'operator': 'delta_rul' is not a graft operator \\(did you mean 'delta_rule'\\?\\)"),
        ({"mag_weight": 1.5}, "'mag_weight'"),
        ({"tptt_compat": True}, "tptt_compat changes only the delta_product"),
    ],
)
def test_graft_config_errors_are_one_line(data, message):
    with pytest.raises(ArchlabError, match=message) as info:
        GraftConfig.parse(data, where="graft")
    assert "\n" not in str(info.value)


def test_chunk_size_follows_the_seed_rule():
    assert GraftConfig(operator="delta_rule").resolved_chunk_size == 64
    assert GraftConfig(operator="delta_product_rotation").resolved_chunk_size == 32
    assert GraftConfig(operator="delta_product", chunk_size=16).resolved_chunk_size == 16


def test_gradient_checkpointing_recomputes_with_the_same_padding_mask():
    ids = tokens()
    mask = torch.ones_like(ids)
    mask[0, 13:] = 0
    grads = []
    for checkpointing in (False, True):
        model = apply_graft(tiny_model("llama"), GraftConfig(lora=False, chunk_size=4)).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, attention_mask=mask, labels=ids).loss.backward()
        grads.append(model.model.layers[0].self_attn.k_proj.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
