"""Loss weighting over micro-batches and ranks, and steps whose examples score nothing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tests.conftest import TINY_MODEL

from archlab.data import DataConfig, build_data
from archlab.models.spec import ModelConfig, build_model
from archlab.train import TrainConfig, Trainer
from archlab.train.objectives import token_weight


def test_token_weight_makes_the_ddp_gradient_mean_the_global_token_mean():
    # two ranks, 3 and 30 scored tokens: DDP averages the ranks' gradients of what each back-propagates
    torch.manual_seed(0)
    weight = torch.randn(8, 5, requires_grad=True)
    ranks = [(torch.randn(3, 8), torch.randint(0, 5, (3,))), (torch.randn(30, 8), torch.randint(0, 5, (30,)))]
    global_tokens = sum(len(y) for _, y in ranks)

    def ddp_gradient(per_rank_loss):
        grads = [torch.autograd.grad(per_rank_loss(x, y), weight)[0] for x, y in ranks]
        return sum(grads) / len(ranks)

    ours = ddp_gradient(lambda x, y: F.cross_entropy(x @ weight, y, reduction="sum")
                        * token_weight(global_tokens, len(ranks)))
    x_all, y_all = torch.cat([x for x, _ in ranks]), torch.cat([y for _, y in ranks])
    (reference,) = torch.autograd.grad(F.cross_entropy(x_all @ weight, y_all), weight)
    torch.testing.assert_close(ours, reference)
    mean_of_means = ddp_gradient(lambda x, y: F.cross_entropy(x @ weight, y))
    assert not torch.allclose(mean_of_means, reference, atol=1e-3)


def _masked_data(corpus_dir, masked_every: int, keep: int = 0):
    """Every ``masked_every``-th training row scores only its first ``keep`` labels (none by default)."""
    data = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32))
    data.train.labels = [torch.cat([labels[:keep], torch.full_like(labels[keep:], -100)])
                         if i % masked_every == 0 else labels for i, labels in enumerate(data.train.labels)]
    return data


def _model(data):
    torch.manual_seed(0)
    return build_model(ModelConfig(config=dict(TINY_MODEL)), vocab_size=len(data.tokenizer))


def test_a_micro_batch_with_no_scored_token_is_skipped_not_a_divergence(tmp_path, corpus_dir):
    data = _masked_data(corpus_dir, masked_every=2)
    cfg = TrainConfig(max_steps=8, per_device_train_batch_size=1, gradient_accumulation_steps=2, logging_steps=1)
    state = Trainer(_model(data), data, cfg, tmp_path).fit()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert state.step == 8 and len(losses) == 8 and all(loss == loss for loss in losses)  # no NaN


def test_a_step_with_no_scored_token_is_skipped_with_a_warning(tmp_path, corpus_dir):
    data = _masked_data(corpus_dir, masked_every=2)
    cfg = TrainConfig(max_steps=6, per_device_train_batch_size=1, logging_steps=1)
    state = Trainer(_model(data), data, cfg, tmp_path).fit()
    events = [json.loads(x).get("event", "") for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert state.step == 6 and state.position > 6 and state.skipped_steps == 0
    assert sum("no scored token" in e for e in events) == state.position - 6


def _ddp_worker(rank: int, world: int, port: int, corpus_dir: str, out: str) -> None:
    import os

    from accelerate import Accelerator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    data = _masked_data(corpus_dir, masked_every=3, keep=4)
    model = _model(data)
    cfg = TrainConfig(max_steps=3, per_device_train_batch_size=2, logging_steps=1, eval_steps=0)
    trainer = Trainer(model, data, cfg, f"{out}/rank{rank}", accelerator=Accelerator(cpu=True))
    trainer.fit()
    if rank == 0:
        torch.save(trainer.unwrapped.state_dict(), f"{out}/ddp.pt")


@pytest.mark.slow
def test_two_gloo_ranks_with_uneven_tokens_equal_one_process(tmp_path, corpus_dir):
    # each rank gets half of every global batch; rows masked unevenly give the ranks different token counts
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(corpus_dir), str(tmp_path)), nprocs=2)
    data = _masked_data(corpus_dir, masked_every=3, keep=4)
    reference = _model(data)
    cfg = TrainConfig(max_steps=3, per_device_train_batch_size=4, logging_steps=1, eval_steps=0)
    Trainer(reference, data, cfg, tmp_path / "single").fit()
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name, p in reference.state_dict().items():
        torch.testing.assert_close(ddp[name], p, rtol=1e-4, atol=1e-6, msg=name)
