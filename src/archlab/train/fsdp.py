"""Sharded data parallelism (``train.fsdp``) with torch's own FSDP2 (``torch.distributed.fsdp.fully_shard``).

The options are HF ``TrainingArguments``' names: ``fsdp: full_shard auto_wrap`` shards parameters, gradients
and optimizer state and frees the gathered parameters after each forward (ZeRO-3); ``shard_grad_op`` keeps
them gathered until the backward is done (ZeRO-2); ``offload`` keeps the shards in CPU memory;
``auto_wrap`` shards every block named in ``fsdp_config.transformer_layer_cls_to_wrap`` (default: the
model's ``_no_split_modules``, the blocks HF's own FSDP wrapping uses) as its own unit, then the root.

Why fully_shard and not accelerate's FSDP plugin: accelerate enables FSDP only on accelerators, while
FSDP2 itself runs on CPU over gloo, which is how it is tested here (2 CPU processes). On GPUs the same
code shards over NCCL. Mixed precision stays accelerate's autocast with fp32 shards, as for DDP.

Checkpoints gather the full state (model and optimizer, parameter names as keys) on rank 0, which writes
them as a DDP run would; any world size, sharded or not, resumes from them. Sharded checkpoints through
``torch.distributed.checkpoint`` are not offered: DCP writes its ``.metadata`` with pickle, and a checkpoint
archlab reads must be data, never code (``archlab.train.state_io``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from archlab.errors import ArchlabError

OPTIONS = ("full_shard", "shard_grad_op", "offload", "auto_wrap")


def parse_options(value: Any) -> list[str]:
    """``"full_shard auto_wrap"`` or a list of those names, as HF TrainingArguments take them."""
    if value in (None, "", False):
        return []
    items = value.split() if isinstance(value, str) else list(value)
    for item in items:
        if item not in OPTIONS:
            raise ValueError(f"unknown fsdp option '{item}'; known: {', '.join(OPTIONS)} (hybrid_shard and "
                             f"no_shard are not offered: use DDP, the default, for no_shard)")
    if "full_shard" in items and "shard_grad_op" in items:
        raise ValueError("fsdp: choose one of full_shard and shard_grad_op")
    return items


def blocks_to_wrap(model: nn.Module, class_names: Iterable[str] | None) -> list[nn.Module]:
    names = set(class_names or getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ArchlabError("train.fsdp auto_wrap: this model declares no _no_split_modules; name its block class in "
                           "train.fsdp_config.transformer_layer_cls_to_wrap")
    found = [m for m in model.modules() if type(m).__name__ in names]
    if not found:
        known = sorted({type(m).__name__ for m in model.modules()})
        raise ArchlabError(f"train.fsdp_config.transformer_layer_cls_to_wrap {sorted(names)} matches no module of "
                           f"this model; its module classes: {', '.join(known[:20])}")
    return found


def shard(model: nn.Module, options: list[str], wrap_classes: list[str] | None, device: torch.device) -> int:
    """Apply FSDP2 in place (the model becomes an FSDPModule): each wrapped block, then the root; returns the
    number of sharded units."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": "shard_grad_op" not in options}
    if "offload" in options:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    model.to(device)
    blocks = blocks_to_wrap(model, wrap_classes) if "auto_wrap" in options else []
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return len(blocks) + 1


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every rank calls this (it gathers); rank 0 gets the full tensors on CPU, other ranks an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_model_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Every rank passes the full tensors it read; each keeps its own shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name (every rank calls it; rank 0 gets it whole)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a name-keyed (FSDP run) or id-keyed (1 process / DDP run) optimizer state into a sharded or plain
    model's optimizer: the same checkpoint resumes at any world size, with or without sharding."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not is_sharded(model) and not keyed_by_name(saved):
        optimizer.load_state_dict(saved)
        return
    if not keyed_by_name(saved):
        saved = _keyed_by_name(model, optimizer, saved)
    set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))


def keyed_by_name(saved: dict[str, Any]) -> bool:
    params = [p for group in saved.get("param_groups", []) for p in group.get("params", [])]
    return bool(params) and all(isinstance(p, str) for p in params)


def _keyed_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """torch numbers parameters in the order of the optimizer's groups; name them through the model."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(ids) != len(order):
        raise ArchlabError(f"the checkpoint's optimizer holds {len(ids)} parameters, this run's {len(order)}; "
                           f"resume with the settings the run was started with")
    rename = dict(zip(ids, order, strict=True))
    return {"state": {rename[i]: s for i, s in saved["state"].items()},
            "param_groups": [{**g, "params": [rename[i] for i in g["params"]]} for g in saved["param_groups"]]}


def local_value(tensor: torch.Tensor) -> float:
    """A reduced DTensor (a gradient norm under FSDP) as a plain number."""
    full = getattr(tensor, "full_tensor", None)
    return float(full() if callable(full) else tensor)
