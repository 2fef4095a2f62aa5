"""What a run is made of, built the same way for training, evaluation and plan-time checks."""

from __future__ import annotations

from accelerate.utils import set_seed
from transformers import PreTrainedModel

from archlab.data import DataBundle
from archlab.evals import EvalContext
from archlab.graft import apply_graft
from archlab.models.spec import build_model
from archlab.plan.schema import RunConfig
from archlab.rundir import RunDir
from archlab.train.loop import apply_trainable


def build_run_model(config: RunConfig, vocab_size: int, base: PreTrainedModel | None = None) -> PreTrainedModel:
    """The model a run trains: its base (new or pretrained), the graft, and which parameters train.

    Seeded with ``train.seed`` first, so a rebuilt model starts from the same weights. Under
    ``torch.device("meta")`` it builds shapes only, which is how ``archlab plan`` checks a model; there
    ``base`` stands in for a pretrained base (built from its config, without reading its weights).
    """
    set_seed(config.train.seed)
    model = base if base is not None else build_model(config.model, vocab_size=vocab_size)
    if config.graft is not None:
        model = apply_graft(model, config.graft)
    apply_trainable(model, config.train.trainable)
    return model


def eval_context(model, data: DataBundle, run: RunDir, config: RunConfig) -> EvalContext:
    return EvalContext(model, data.tokenizer, data, run.path, seed=config.train.seed,
                       batch_size=config.train.per_device_eval_batch_size)
