"""Training-step time of HOPE (hybrid, self-modifying Titans) vs the plain transformer of the same backbone (issue 11 §4).

All variants are ``HopeForCausalLM`` with the same width, depth and heads, trained with AdamW on the same random
batch; ``transformer`` is the backbone with a plain MLP (no fast memories). The HOPE variants run their fast
writes online in model chunks of ``online_chunk`` tokens (the gcd of the update periods): the CMS periods set
that chunk, and with it how many sequential model chunks a sequence needs. A training step runs that online pass
without autograd and replays the sequence with it in batched matmuls (``train_replay``, the default;
``archlab.models.hope_replay``); ``--online`` times the online pass with autograd instead, ``--compare-online``
both. Every model trains one step per round, in interleaved rounds, so drift in the machine's speed weighs on all
rows alike. Target: <= 3x the transformer's step time at seq 512 on CPU.

Each row also gives its step's FLOPs (matmuls, attention and convolutions, forward + backward, counted by
``torch.utils.flop_counter`` on the first warm-up step) over the transformer's, and its FLOP rate over the
transformer's: a variant whose FLOPs alone exceed 3x meets the target only by running its matmuls faster than the
transformer runs its own, and the rate says how much of the gap is the small sequential matmuls of the online pass.

    python -m benchmarks.hope_throughput [--seq 512] [--batch 4] [--hidden 128] [--layers 4] [--steps 3]
    OMP_NUM_THREADS=1 python -m benchmarks.hope_throughput --cpu-time   # on a shared machine
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from archlab.models import HopeConfig, HopeForCausalLM

VARIANTS = {
    "transformer": dict(block_type="transformer"),
    "hope_hybrid (CMS 8/32/128/512)": dict(block_type="hope_hybrid", cms_periods=[8, 32, 128, 512], titan_period=8),
    "hope_hybrid (CMS 16/64/256)": dict(block_type="hope_hybrid", cms_periods=[16, 64, 256], titan_period=16),
    "hope_hybrid (pilot CMS 1/4/32/128)": dict(block_type="hope_hybrid", cms_periods=[1, 4, 32, 128]),
    "hope_selfmod (chunks 8/64, CMS 8/32/128)": dict(block_type="hope_selfmod", cms_periods=[8, 32, 128]),
}


def interleaved_step_times(models: dict[str, torch.nn.Module], ids: torch.Tensor, steps: int, warmup: int,
                           clock=time.perf_counter, flops: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Seconds per optimizer step (forward + backward + AdamW) of every model, one step each per round (the order
    reversed every other round), so a machine whose speed drifts during the run weighs on every row alike.
    ``flops``: filled with each model's FLOPs per step, counted on the first (untimed) warm-up round."""
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for i in range(max(warmup, 1 if flops is not None else 0) + steps):
        for name in names if i % 2 == 0 else names[::-1]:
            model, optimizer = models[name].train(), optimizers[name]
            counter = FlopCounterMode(display=False) if flops is not None and i == 0 else None
            start = clock()
            with counter if counter is not None else contextlib.nullcontext():
                model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if counter is not None:
                flops[name] = counter.get_total_flops()
            elif i >= max(warmup, 1 if flops is not None else 0):
                times[name].append(clock() - start)
    return times


def paired_ratios(times: list[float], base: list[float]) -> list[float]:
    """Each round's step time over the transformer's in the same round: on a machine whose speed swings between
    rounds, their spread shows how far one run's ratio of medians can be trusted."""
    return [t / b for t, b in zip(times, base, strict=True)]


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
    parser.add_argument("--compare-online", action="store_true", help="every HOPE variant both ways, side by side")
    parser.add_argument("--cpu-time", action="store_true", help="time by this process's CPU seconds (with one "
                        "thread: steadier than wall time on a shared machine)")
    args = parser.parse_args()
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads "
          f"{torch.get_num_threads()}; seq {args.seq}, batch {args.batch}, d={args.hidden}, {args.layers} layers")
    models, chunks = {}, {}
    for name, extra in VARIANTS.items():
        if args.only and not any(o in name for o in args.only) and name != "transformer":
            continue
        modes = [False] if name == "transformer" else ([True, False] if args.compare_online else [not args.online])
        for replay in modes:
            label = name if len(modes) == 1 else f"{name}{'' if replay else ' online'}"
            cfg = HopeConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                             num_attention_heads=4, cms_hidden_multiplier=2, titan_hidden_multiplier=2,
                             eos_token_id=None, train_replay=replay, **extra)
            torch.manual_seed(0)
            models[label], chunks[label] = HopeForCausalLM(cfg), cfg.online_chunk
    clock = time.process_time if args.cpu_time else time.perf_counter
    flops: dict[str, int] = {}
    times = interleaved_step_times(models, ids, args.steps, args.warmup, clock, flops)
    base = statistics.median(times["transformer"])
    for name, model in models.items():
        t = statistics.median(times[name])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        paired = paired_ratios(times[name], times["transformer"])
        work = flops[name] / flops["transformer"]
        print(f"{name:49s} {params:6.2f}M params  chunk {chunks[name] or '-':>3}  {t * 1000:8.1f} ms/step  "
              f"{args.batch * args.seq / t:9.0f} tok/s  {t / base:5.2f}x transformer  (per round "
              f"{statistics.median(paired):.2f}x, {min(paired):.2f}-{max(paired):.2f}x)  {work:5.2f}x its FLOPs "
              f"({flops[name] / 1e9:.1f} G) at {work * base / t:4.2f}x its FLOP rate")



if __name__ == "__main__":
    main()
