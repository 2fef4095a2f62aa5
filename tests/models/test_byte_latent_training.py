"""Seed 004's phase 1 does its job: training the byte LM lowers held-out entropy and gives patches longer than one
byte at a fixed threshold (the seed's untrained entropy model left every byte its own patch); and the baselines
and the byte latent model are scored by the same eval code."""

from __future__ import annotations

import pytest
import torch
from tests.evals.conftest import tiny_model

from archlab.data import load_tokenizer
from archlab.evals import EvalSpec, run_eval
from archlab.evals.lib.texts import corpus_documents
from archlab.models.byte_latent import ByteLatentConfig, ByteLatentForCausalLM, byte_entropies
from archlab.nn.byte_latent import entropy_boundaries, mean_patch_length

EOS = 256


def _bytes(split: str, n: int) -> torch.Tensor:
    text = "\n".join(corpus_documents("shakespeare", (split,)))
    return torch.tensor(list(text.encode("utf-8")[:n]), dtype=torch.long)


@pytest.mark.slow
def test_training_the_entropy_model_lowers_held_out_entropy_and_lengthens_patches():
    torch.manual_seed(0)
    model = tiny_model(258)
    train, held = _bytes("train", 200_000), _bytes("validation", 4 * 128).view(4, 128)

    def entropy_and_patch() -> tuple[float, float]:
        model.eval()
        H = byte_entropies(model, held, EOS, newline_id=10)
        return float(H.mean()), mean_patch_length(entropy_boundaries(H, threshold=0.8, max_patch_size=8))

    before = entropy_and_patch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        starts = torch.randint(0, len(train) - 65, (8,), generator=gen)
        batch = torch.stack([train[s : s + 65] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = entropy_and_patch()
    assert after[0] < before[0] - 0.1, (before, after)  # normalised entropy, 1.0 = uniform over 256 bytes
    assert before[1] < 1.1 and after[1] > 1.2, (before, after)  # compression > 1 only once trained


def test_the_baselines_and_the_byte_latent_model_share_the_eval_code(tmp_path):
    from pathlib import Path

    from archlab.evals import EvalContext

    tok = load_tokenizer("bytes")
    torch.manual_seed(0)
    latent = ByteLatentForCausalLM(ByteLatentConfig(hidden_size=32, num_local_layers=1, num_latent_layers=1,
                                                    num_attention_heads=2, patching="static", patch_size=4)).eval()
    byte_transformer = tiny_model(len(tok)).eval()
    results = {}
    for name, model in {"latent": latent, "byte_transformer": byte_transformer}.items():
        ctx = EvalContext(model, tok, None, Path(tmp_path) / name)
        results[name] = {
            "compression": run_eval(EvalSpec.model_validate({"name": "compression", "slices": ["wiki"],
                                                             "max_bytes": 400}), ctx),
            "long_ppl": run_eval(EvalSpec.model_validate({"name": "long_ppl", "source": "shakespeare", "window": 64,
                                                          "max_documents": 1, "max_bytes": 300}), ctx),
        }
    assert results["latent"]["compression"]["metrics"]["bytes_per_patch"] == pytest.approx(4.0, rel=0.02)
    assert results["byte_transformer"]["compression"]["metrics"]["bytes_per_patch"] == 1.0
    # the same bytes are scored for both (long_ppl max_bytes)
    assert results["latent"]["long_ppl"]["details"]["bytes"] == results["byte_transformer"]["long_ppl"]["details"][
        "bytes"]
