"""Training-step time of HOPE (hybrid, self-modifying Titans) vs the plain transformer of the same backbone (issue 11 §4).

All variants are ``HopeForCausalLM`` with the same width, depth and heads, trained with AdamW on the same random
batch; ``transformer`` is the backbone with a plain MLP (no fast memories). The HOPE variants run their fast
writes online in model chunks of ``online_chunk`` tokens (the gcd of the update periods): the CMS periods set
that chunk, and with it how many sequential model chunks a sequence needs. A training step runs that online pass
without autograd and replays the sequence with it in batched matmuls (``train_replay``, the default;
``archlab.models.hope_replay``); ``--online`` times the online pass with autograd instead. Target: <= 3x the
transformer's step time at seq 512 on CPU.

    python -m benchmarks.hope_throughput [--seq 512] [--batch 4] [--hidden 128] [--layers 4] [--steps 3]
    OMP_NUM_THREADS=1 python -m benchmarks.hope_throughput --cpu-time   # on a shared machine
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from archlab.models import HopeConfig, HopeForCausalLM

VARIANTS = {
    "transformer": dict(block_type="transformer"),
    "hope_hybrid (CMS 8/32/128/512)": dict(block_type="hope_hybrid", cms_periods=[8, 32, 128, 512], titan_period=8),
    "hope_hybrid (CMS 16/64/256)": dict(block_type="hope_hybrid", cms_periods=[16, 64, 256], titan_period=16),
    "hope_hybrid (pilot CMS 1/4/32/128)": dict(block_type="hope_hybrid", cms_periods=[1, 4, 32, 128]),
    "hope_selfmod (chunks 8/64, CMS 8/32/128)": dict(block_type="hope_selfmod", cms_periods=[8, 32, 128]),
}


def step_times(model: torch.nn.Module, ids: torch.Tensor, steps: int, warmup: int,
               clock=time.perf_counter) -> list[float]:
    """Seconds per optimizer step (forward + backward + AdamW) after ``warmup`` untimed steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        start = clock()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(clock() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    parser.add_argument("--online", action="store_true", help="train_replay=false: the online pass with autograd")
    parser.add_argument("--cpu-time", action="store_true", help="time by this process's CPU seconds (with one "
                        "thread: steadier than wall time on a shared machine)")
    args = parser.parse_args()
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads "
          f"{torch.get_num_threads()}; seq {args.seq}, batch {args.batch}, d={args.hidden}, {args.layers} layers")
    base = None
    for name, extra in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        cfg = HopeConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=4, cms_hidden_multiplier=2, titan_hidden_multiplier=2,
                         eos_token_id=None, train_replay=not args.online, **extra)
        model = HopeForCausalLM(cfg)
        clock = time.process_time if args.cpu_time else time.perf_counter
        t = statistics.median(step_times(model, ids, args.steps, args.warmup, clock))
        base = t if name == "transformer" else base
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ratio = f"{t / base:5.2f}x" if base else "   - "
        print(f"{name:42s} {params:6.2f}M params  chunk {cfg.online_chunk or '-':>3}  {t * 1000:8.1f} ms/step  "
              f"{args.batch * args.seq / t:9.0f} tok/s  {ratio} transformer")


if __name__ == "__main__":
    main()
