"""Which model a run trains: an archlab architecture from scratch, or a pretrained HF checkpoint."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from pydantic import Field
from transformers import AutoModelForCausalLM, PreTrainedModel

from archlab.config import Config
from archlab.errors import ArchlabError, did_you_mean
from archlab.models.registry import ARCHITECTURES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelConfig(Config):
    arch: str = Field("transformer", description="registered archlab architecture (see `archlab ls`); ignored "
                      "when 'pretrained' is set")
    config: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the architecture's "
                                   "config class (hidden_size, num_hidden_layers, position_embedding, ...)")
    pretrained: str | None = Field(None, description="HF hub id or local folder to load with from_pretrained")
    trust_remote_code: bool = Field(False, description="allow custom modelling code from the hub (e.g. OpenELM)")
    dtype: str = Field("float32", description="parameter dtype: float32, bfloat16 or float16")


def config_keys(config_class) -> list[str]:
    params = inspect.signature(config_class.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def build_model(spec: ModelConfig, vocab_size: int | None = None, **extra: Any) -> PreTrainedModel:
    """A fresh model (vocab from the tokenizer unless model.config sets it) or a pretrained one."""
    if spec.dtype not in DTYPES:
        raise ArchlabError(f"model.dtype '{spec.dtype}' unknown{did_you_mean(spec.dtype, DTYPES)}; use one of {list(DTYPES)}")
    if spec.pretrained:
        try:
            return AutoModelForCausalLM.from_pretrained(
                spec.pretrained, dtype=DTYPES[spec.dtype], trust_remote_code=spec.trust_remote_code
            )
        except OSError as exc:
            raise ArchlabError(
                f"model '{spec.pretrained}' could not be loaded ({str(exc).splitlines()[0][:160]}); if offline, "
                f"download it elsewhere and pass model.pretrained=/path/to/folder"
            ) from None
    arch = ARCHITECTURES.get(spec.arch)
    valid = config_keys(arch.config_class)
    for key in spec.config:
        if key not in valid:
            raise ArchlabError(f"unknown key 'model.config.{key}' for architecture '{spec.arch}'{did_you_mean(key, valid)}")
    kwargs = {"vocab_size": vocab_size, **spec.config, **extra} if vocab_size else {**spec.config, **extra}
    try:
        config = arch.config_class(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ArchlabError(f"model.config: {exc}") from None
    return arch.model_class(config).to(DTYPES[spec.dtype])
