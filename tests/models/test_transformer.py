from __future__ import annotations

import pytest
import torch
from tests.conftest import tiny_decoder
from transformers import AutoConfig, AutoModelForCausalLM

import archlab  # noqa: F401  (registers the Auto classes)
from archlab.errors import ArchlabError
from archlab.models import ArchlabTransformerConfig
from archlab.models.spec import ModelConfig, build_model

VARIANTS = [
    {"position_embedding": "learned"},
    {"position_embedding": "rope", "norm_type": "rmsnorm", "mlp": "swiglu", "bias": False},
    {"position_embedding": "none", "norm_position": "post"},
    {"position_embedding": "rope", "num_key_value_heads": 2},
    {"position_embedding": "rope", "sliding_window": 4},
    {"position_embedding": "learned", "tie_word_embeddings": False},
]


def tiny(**kw):
    return tiny_decoder(50, **kw)


@pytest.mark.parametrize("kw", VARIANTS)
def test_changing_future_tokens_does_not_change_earlier_logits(kw):
    model = tiny(**kw)
    x = torch.randint(0, 50, (2, 20))
    y = x.clone()
    y[:, 11:] = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, :11], b[:, :11])
    assert not torch.allclose(a[:, 11:], b[:, 11:])


@pytest.mark.parametrize("kw", VARIANTS)
def test_cached_generation_equals_the_full_forward(kw):
    model = tiny(**kw)
    prompt = torch.randint(0, 50, (2, 6))
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, min_new_tokens=8,
                         do_sample=False, pad_token_id=0)
    with torch.no_grad():
        full = model(out).logits
    assert torch.equal(full[:, 5:-1].argmax(-1), out[:, 6:])


def test_left_padding_gives_the_same_greedy_tokens():
    model = tiny(position_embedding="rope")
    prompt = torch.randint(2, 50, (1, 5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)], 1)
    a = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False, pad_token_id=0)
    b = model.generate(padded, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(a[:, 5:], b[:, 8:])


def test_save_and_load_through_the_auto_classes(tmp_path):
    model = tiny(position_embedding="rope", num_key_value_heads=2)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ArchlabTransformerConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 50, (1, 9))
    torch.testing.assert_close(loaded(x).logits, model(x).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_loss_matches_a_manual_shifted_cross_entropy():
    model = tiny()
    x = torch.randint(0, 50, (2, 10))
    out = model(x, labels=x)
    manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 50), x[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, manual)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = tiny(position_embedding="rope").train()
    b = tiny(position_embedding="rope").train()
    b.load_state_dict(a.state_dict())
    b.gradient_checkpointing_enable()
    x = torch.randint(0, 50, (2, 12))
    a(x, labels=x).loss.backward()
    b(x, labels=x).loss.backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_build_model_rejects_unknown_architecture_keys():
    with pytest.raises(ArchlabError, match=r"unknown key 'model.config.hiden_size'.*did you mean 'hidden_size'"):
        build_model(ModelConfig(config={"hiden_size": 8}), vocab_size=10)
    with pytest.raises(ArchlabError, match="position_embedding must be one of"):
        build_model(ModelConfig(config={"position_embedding": "alibi"}), vocab_size=10)
    with pytest.raises(ArchlabError, match="unknown architecture 'transfomer'.*did you mean 'transformer'"):
        build_model(ModelConfig(arch="transfomer"), vocab_size=10)


def test_missing_pretrained_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ArchlabError, match="could not be loaded.*model.pretrained=/path/to/folder"):
        build_model(ModelConfig(pretrained=str(tmp_path / "nope")))
