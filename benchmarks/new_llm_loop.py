"""Training throughput of seed 002's New-LLM time loop: the step-by-step reference vs the fast loop.

The context recurrence is nonlinear, so the time axis stays a loop; what can be made fast is the work per
step. Three versions of the same math (L=6, d_c=256, H=512, vocab 1000, 63-token windows, the seed's model):

- ``reference``: the equations as written (``archlab.nn.context_vector.reference_loop``): concat [e_t; c],
  L layers, three separate context heads, LayerNorm, clip, every step;
- ``eager``: the embedding half of the first layer hoisted out of the loop (one
  matmul for all tokens) and the three heads fused into one matmul;
- ``fused`` (the model's default ``loop_impl``): the eager loop's forward as one autograd node whose backward
  is hand-written BPTT, with every weight gradient one [T*B]-row matmul after the loop.

Tokens/s counts forward + backward + Adam step, training mode (dropout on). Run
``python -m benchmarks.new_llm_loop`` (``--batch 512`` for the seed's T4 batch; ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from archlab.models import NewLLMConfig, NewLLMForCausalLM
from archlab.nn.context_vector import LOOP_IMPLS, reference_loop


def step_fn(model: NewLLMForCausalLM, impl: str):
    def reference_forward(ids):
        h, _ = reference_loop(model.cell, model.embed_tokens(ids))
        return model.lm_head(h)

    def fast_forward(ids):
        return model(input_ids=ids).logits

    model.cell.impl = "eager" if impl == "reference" else impl
    forward = reference_forward if impl == "reference" else fast_forward
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(ids):
        logits = forward(ids)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def best_tokens_per_second(batch: int, length: int, steps: int, repeats: int, device: str) -> dict[str, float]:
    """Best of ``repeats`` timings of ``steps`` training steps per loop, interleaved so that load on a shared
    machine hits every loop alike."""
    ids = torch.randint(0, 1000, (batch, length + 1), device=device)
    runners = {}
    for impl in ("reference", *LOOP_IMPLS):
        torch.manual_seed(0)
        model = NewLLMForCausalLM(NewLLMConfig(num_hidden_layers=6)).to(device).train()
        runners[impl] = step_fn(model, impl)
        runners[impl](ids)  # warm-up
    best = dict.fromkeys(runners, 0.0)
    for _ in range(repeats):
        for impl, step in runners.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step(ids)
            if device == "cuda":
                torch.cuda.synchronize()
            best[impl] = max(best[impl], batch * length * steps / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=63)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"New-LLM L=6 training tokens/s (batch {args.batch}, {args.length} tokens, {args.device}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats})")
    best = best_tokens_per_second(args.batch, args.length, args.steps, args.repeats, args.device)
    print("| loop | tokens/s | vs reference |\n|---|---|---|")
    for impl, value in best.items():
        print(f"| {impl} | {value:,.0f} | {value / best['reference']:.2f}x |")


if __name__ == "__main__":
    main()
