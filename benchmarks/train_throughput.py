"""archlab's training loop + baseline decoder vs HF ``GPT2LMHeadModel`` trained by HF ``Trainer``.

Same shape (6 layers, d=256, 8 heads, seq 256, GPT-2 style: learned positions, LayerNorm, GELU MLP, tied
embeddings), same data (embedded Shakespeare blocks), same optimizer (AdamW, constant LR), same batch, on
this machine, in one process, side by side. Prints tokens/s for both, the ratio, and achieved GFLOP/s
against a measured fp32 GEMM ceiling.

    python -m benchmarks.train_throughput [--steps 30] [--batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

LAYERS, HIDDEN, HEADS, SEQ = 6, 256, 8, 256


def gemm_ceiling(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def train_flops_per_token(n_params_no_embed: int) -> float:
    # 6N for forward+backward of the dense weights plus attention scores (12 * L * d * T), Kaplan/Chinchilla
    return 6 * n_params_no_embed + 12 * LAYERS * HIDDEN * SEQ


def archlab_run(data, steps: int, batch: int, warmup: int) -> tuple[float, int]:
    from archlab.models.spec import ModelConfig, build_model
    from archlab.train import TrainConfig, Trainer

    torch.manual_seed(0)
    config = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "max_position_embeddings": SEQ, "position_embedding": "learned"}
    model = build_model(ModelConfig(config=config), vocab_size=len(data.tokenizer))
    n = sum(p.numel() for n_, p in model.named_parameters() if "embed" not in n_)
    times = []
    for n_steps in (warmup, warmup + steps):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(max_steps=n_steps, per_device_train_batch_size=batch, learning_rate=3e-4,
                              lr_scheduler_type="constant", logging_steps=10**6, max_grad_norm=1.0)
            trainer = Trainer(model, data, cfg, Path(tmp))
            trainer.evaluate = lambda: {}  # time training only (HF Trainer below does no eval either)
            start = time.perf_counter()
            trainer.fit(resume=False)
            times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / steps, n


def hf_trainer_run(data, steps: int, batch: int, warmup: int) -> tuple[float, int]:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(data.tokenizer), n_positions=SEQ, n_embd=HIDDEN, n_layer=LAYERS,
                        bos_token_id=0, eos_token_id=0,
                        n_head=HEADS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    n = sum(p.numel() for n_, p in model.named_parameters() if ".wte" not in n_ and ".wpe" not in n_)
    rows = [{"input_ids": x, "labels": x} for x in data.train.input_ids]
    times = []
    for n_steps in (warmup, warmup + steps):
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=n_steps,
                                     learning_rate=3e-4, lr_scheduler_type="constant", report_to=[],
                                     save_strategy="no", logging_strategy="no", use_cpu=True,
                                     dataloader_num_workers=0, disable_tqdm=True, optim="adamw_torch")
            trainer = Trainer(model=model, args=args, train_dataset=rows)
            start = time.perf_counter()
            trainer.train()
            times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / steps, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    from archlab.data import DataConfig, build_data

    data = build_data(DataConfig(source="embedded:shakespeare", block_size=SEQ))
    ceiling = gemm_ceiling()
    tokens_per_step = args.batch * SEQ
    results = {}
    for name, fn in (("archlab (Trainer loop + baseline decoder)", archlab_run),
                     ("HF Trainer + GPT2LMHeadModel", hf_trainer_run)):
        seconds, n_params = fn(data, args.steps, args.batch, args.warmup)
        results[name] = (tokens_per_step / seconds, n_params)
    table = Table(title=f"Training throughput, {LAYERS}L d={HIDDEN} h={HEADS} seq={SEQ} batch={args.batch}, "
                        f"{torch.get_num_threads()} threads, fp32 (GEMM ceiling {ceiling:.0f} GFLOP/s)")
    for col in ("system", "non-embedding params", "tokens/s", "GFLOP/s", "% of GEMM ceiling"):
        table.add_column(col)
    for name, (tps, n_params) in results.items():
        gflops = tps * train_flops_per_token(n_params) / 1e9
        table.add_row(name, f"{n_params / 1e6:.2f}M", f"{tps:,.0f}", f"{gflops:.1f}", f"{100 * gflops / ceiling:.0f}%")
    (a, _), (b, _) = results.values()
    console = Console(width=140)
    console.print(table)
    console.print(f"ratio archlab / HF Trainer: {a / b:.2f}x  (target >= 1.25x)")


if __name__ == "__main__":
    main()
