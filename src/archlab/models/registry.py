"""Registry of archlab architectures: name -> (config class, causal-LM class)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig, PreTrainedModel

from archlab.registry import Registry


@dataclass(frozen=True)
class Architecture:
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]


ARCHITECTURES: Registry[Architecture] = Registry("architecture")
