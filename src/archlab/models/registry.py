"""Registry of archlab architectures: name -> (config class, causal-LM class, tiny test config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from archlab.registry import Registry


@dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    Attributes:
        config_class: its ``PretrainedConfig`` subclass.
        model_class: its causal-LM ``PreTrainedModel`` subclass.
        tiny_config: config keywords of a model small enough for the generic tests (causality, cached decoding,
            save/load, generate, gradients: ``tests/models/test_architectures_generic.py``), vocab excluded.
    """

    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]
    tiny_config: dict[str, Any] = field(default_factory=dict)


ARCHITECTURES: Registry[Architecture] = Registry("architecture")
