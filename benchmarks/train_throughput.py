"""archlab's training loop + baseline decoder vs HF ``Trainer`` + ``GPT2LMHeadModel``, four rows side by side.

Same shape (6 layers, d=256, 8 heads, seq 256, GPT-2 style: learned positions, LayerNorm, GELU MLP, tied
embeddings), same data (embedded Shakespeare blocks), same optimizer (AdamW, constant LR), same batch:

1. archlab default: the precision ``bf16: auto`` picks here, and ``torch_compile: auto`` decided by its rule
   for a long run (10,000 steps: the first round probes 5 eager steps, later rounds reuse the decision);
2. archlab eager fp32 (``bf16: false, torch_compile: false``);
3. HF Trainer default (``TrainingArguments`` defaults: eager fp32 on CPU);
4. HF Trainer with ``torch_compile=True`` and ``bf16=True`` where the hardware has native bf16.

Every row runs in this one process, in ``--rounds`` interleaved rounds (the order rotates each round), each a
fresh short training of ``--warmup`` untimed + ``--steps`` timed optimizer steps; a row's time is the median
step over all its rounds (robust on a shared machine). FLOPs per token are counted from each model
(``archlab.models.flops``: every matmul incl. the LM head and attention); MFU is against the measured matmul
peak of the row's precision (``archlab.hardware``). Targets: archlab default >= 1.25x HF default, and
archlab default >= 1.0x HF with the same compile / precision settings (row 4).

    python -m benchmarks.train_throughput [--steps 5] [--warmup 2] [--rounds 5] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

LAYERS, HIDDEN, HEADS, SEQ = 6, 256, 8, 256


class ArchlabRow:
    def __init__(self, name: str, data, batch: int, bf16, torch_compile):
        from archlab.models.spec import ModelConfig, build_model

        self.name, self.data, self.batch = name, data, batch
        self.bf16, self.torch_compile = bf16, torch_compile
        torch.manual_seed(0)
        config = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                  "max_position_embeddings": SEQ, "position_embedding": "learned"}
        self.model = build_model(ModelConfig(config=config), vocab_size=len(data.tokenizer))
        self.precision, self.compiled, self.note = "?", False, ""

    def round(self, warmup: int, steps: int) -> list[float]:
        from archlab.train import TrainConfig, Trainer

        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(max_steps=10_000, per_device_train_batch_size=self.batch, learning_rate=3e-4,
                              lr_scheduler_type="constant", logging_steps=10**6, max_grad_norm=1.0,
                              bf16=self.bf16, torch_compile=self.torch_compile)
            trainer = Trainer(self.model, self.data, cfg, Path(tmp))
            self.precision = trainer.precision
            if trainer.compile.decided:
                trainer._compile_model()
            times = []
            probing = self.torch_compile == "auto" and trainer.compile.decided is None
            n = warmup + steps + (5 if probing else 0)
            for _ in range(n):
                start = time.perf_counter()
                trainer._optimizer_step(trainer.sampler.indices(trainer.state.position))
                elapsed = time.perf_counter() - start
                trainer.state.position += 1
                trainer.state.step += 1
                was = trainer.compiled
                trainer._after_step(elapsed)
                if trainer.compiled and not was:  # the rule fired: time compiled steps from here on
                    times.clear()
                    self.note = trainer.compile.reason
                    n_left = warmup + steps
                    for _ in range(n_left):
                        start = time.perf_counter()
                        trainer._optimizer_step(trainer.sampler.indices(trainer.state.position))
                        times.append(time.perf_counter() - start)
                        trainer.state.position += 1
                    break
                times.append(elapsed)
            if probing:
                self.torch_compile = bool(trainer.compile.decided)  # later rounds reuse the decision
                self.note = self.note or trainer.compile.reason
            self.compiled = trainer.compiled
        return times[warmup:]


class HFRow:
    def __init__(self, name: str, data, batch: int, bf16: bool, torch_compile: bool):
        from transformers import GPT2Config, GPT2LMHeadModel

        self.name, self.batch, self.bf16, self.torch_compile = name, batch, bf16, torch_compile
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=len(data.tokenizer), n_positions=SEQ, n_embd=HIDDEN, n_layer=LAYERS,
                            bos_token_id=0, eos_token_id=0, n_head=HEADS, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0)
        self.model = GPT2LMHeadModel(config)
        self.rows = [{"input_ids": x, "labels": x} for x in data.train.input_ids]
        self.precision = "bf16" if bf16 else "fp32"
        self.compiled, self.note = torch_compile, ""

    def round(self, warmup: int, steps: int) -> list[float]:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                self.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                times.append(time.perf_counter() - self.start)

        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=self.batch,
                                     max_steps=warmup + steps, learning_rate=3e-4, lr_scheduler_type="constant",
                                     report_to=[], save_strategy="no", logging_strategy="no",
                                     use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                                     disable_tqdm=True, optim="adamw_torch", bf16=self.bf16,
                                     torch_compile=self.torch_compile)
            Trainer(model=self.model, args=args, train_dataset=self.rows, callbacks=[Timer()]).train()
        return times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    from archlab.data import DataConfig, build_data
    from archlab.hardware import PRECISION_DTYPES, device_name, matmul_peak_flops, native_bf16
    from archlab.models.flops import training_flops_per_token

    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = build_data(DataConfig(source="embedded:shakespeare", block_size=SEQ))
    bf16 = native_bf16(device)
    rows = [
        ArchlabRow("archlab default (bf16 auto, compile auto)", data, args.batch, "auto", "auto"),
        ArchlabRow("archlab eager fp32", data, args.batch, False, False),
        HFRow("HF Trainer default", data, args.batch, False, False),
        HFRow(f"HF Trainer torch_compile=True{' + bf16' if bf16 else ''}", data, args.batch, bf16, True),
    ]
    samples: dict[str, list[float]] = {r.name: [] for r in rows}
    for rnd in range(args.rounds):
        order = rows[rnd % len(rows):] + rows[: rnd % len(rows)]
        for row in order:
            samples[row.name] += row.round(args.warmup, args.steps)
            print(f"round {rnd + 1}/{args.rounds}: {row.name}: median {statistics.median(samples[row.name]):.3f} s/step",
                  flush=True)
    tokens_per_step = args.batch * SEQ
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = Table(title=f"Training throughput, {LAYERS}L d={HIDDEN} h={HEADS} seq={SEQ} batch={args.batch}, "
                        f"{device_name(device)}, load average {load:.1f}; median of {args.rounds} x {args.steps} "
                        f"interleaved steps")
    for col in ("system", "precision", "compiled", "s/step", "tokens/s", "FLOPs/token", "GFLOP/s", "MFU",
                "vs HF default"):
        table.add_column(col)
    tps = {r.name: tokens_per_step / statistics.median(samples[r.name]) for r in rows}
    hf_default = tps[rows[2].name]
    for row in rows:
        fpt = training_flops_per_token(row.model, SEQ)
        achieved = tps[row.name] * fpt
        peak = matmul_peak_flops(device, PRECISION_DTYPES[row.precision], at_least=achieved)
        table.add_row(row.name, row.precision, str(row.compiled), f"{statistics.median(samples[row.name]):.3f}",
                      f"{tps[row.name]:,.0f}", f"{fpt / 1e6:.1f}M", f"{achieved / 1e9:.1f}",
                      f"{100 * achieved / peak:.1f}%", f"{tps[row.name] / hf_default:.2f}x")
    console = Console(width=160)
    console.print(table)
    a = tps[rows[0].name]
    console.print(f"archlab default / HF default: {a / hf_default:.2f}x (target >= 1.25x)")
    console.print(f"archlab default / HF same settings: {a / tps[rows[3].name]:.2f}x (target >= 1.0x)")
    console.print(f"archlab eager fp32 / HF default (same math): {tps[rows[1].name] / hf_default:.2f}x")
    if rows[0].note:
        console.print(f"archlab default compile decision: {rows[0].note}")


if __name__ == "__main__":
    main()
