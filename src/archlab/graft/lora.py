"""What a graft trains: LoRA on the attention projections (peft), or the projections themselves.

The memory branch has no weights of its own (it shares q/k/v/o with the attention, as TPTT does), so
"LoRA + memory" trains the LoRA factors, which move both branches together; "without LoRA" trains the full
attention projection matrices with everything else frozen, as seed 000 specifies.
"""

from __future__ import annotations

from torch import nn

from archlab.errors import ArchlabError
from archlab.graft.adapters import GPT2Projections, Layout
from archlab.graft.config import GraftConfig


def projection_names(attentions: list[tuple[str, nn.Module, Layout]]) -> list[str]:
    """Full module names of every attention projection (the LoRA targets)."""
    return [f"{name}.{proj}" if name else proj for name, _, layout in attentions for proj in layout.lora_targets]


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def add_lora(model: nn.Module, attentions: list[tuple[str, nn.Module, Layout]], cfg: GraftConfig) -> None:
    """Inject LoRA adapters (peft) into the attention projections of ``model``, in place.

    ``inject_adapter_in_model`` keeps the model a plain ``PreTrainedModel`` (generate, save_pretrained and the
    trainer see the same object); the targets are exact module names, so GPT-2's MLP c_proj is not touched.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model, prepare_model_for_kbit_training
    except ImportError:
        raise ArchlabError("graft.lora needs peft: pip install 'archlab[graft]' (or set graft.lora=false)") from None
    if is_quantized(model):
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=projection_names(attentions),
        fan_in_fan_out=any(isinstance(layout, GPT2Projections) for _, _, layout in attentions),
        bias="none",
    )
    inject_adapter_in_model(config, model)


def select_trainable(model: nn.Module, attentions: list[tuple[str, nn.Module, Layout]], lora: bool) -> int:
    """Freeze everything but the LoRA factors (``lora``) or the attention projections; returns #trainable.

    Raises:
        ArchlabError: training full projections of a 4-bit model (its weights are not trainable).
    """
    if not lora and is_quantized(model):
        raise ArchlabError("graft.lora=false trains the attention projections, which a 4-bit model cannot; "
                           "use graft.lora=true with quantized bases")
    prefixes = tuple(f"{name}." for name in projection_names(attentions))
    count = 0
    for name, param in model.named_parameters():
        keep = "lora_" in name if lora else name.startswith(prefixes)
        param.requires_grad_(keep)
        count += param.numel() if keep else 0
    if count == 0:
        raise ArchlabError(f"graft selected no trainable parameter in {type(model).__name__} (lora={lora})")
    return count
