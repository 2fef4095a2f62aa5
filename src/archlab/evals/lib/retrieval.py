"""What needle-in-a-haystack and passkey share: token-exact prompts, greedy answers, distractor ranking.

A prompt is assembled from token lists (not re-tokenized text), so its length in the model's tokens is
exactly the nominal length. Each item is scored two ways from one pass over the context:

- exact match: the first run of digits in the greedy continuation equals the key;
- rank: the log-probability of `` <key>`` against ``n_distractors`` random keys of the same length
  (rank 1 = the true key is strictly the most likely; chance of rank 1 is 1 / (n_distractors + 1)).
  A distractor that ties with the true key ranks above it: a model that cannot tell the keys apart
  (e.g. one that scores every key alike) gets the worst rank, never a free rank 1.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from archlab.evals.base import EvalContext
from archlab.evals.lib.loglik import PrefixState
from archlab.evals.lib.memorize import memorized
from archlab.evals.lib.stats import wilson_interval

_DIGITS = re.compile(r"\d+")


def random_key(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def distractor_keys(rng: random.Random, key: str, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        candidate = random_key(rng, len(key))
        if candidate != key:
            out.add(candidate)
    return sorted(out)


def ids(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


@dataclass
class ItemScore:
    exact: bool
    rank: int
    answer: str

    def to_dict(self, suffix: str = "") -> dict:
        return {f"exact{suffix}": self.exact, f"rank{suffix}": self.rank, f"answer{suffix}": self.answer}


def score_item(ctx: EvalContext, prompt: list[int], key: str, distractors: list[str], memorize: bool,
               max_new_tokens: int) -> ItemScore:
    """Greedy answer and distractor rank for one prompt; ``memorize`` gives the model the prompt only."""
    tok = ctx.tokenizer
    with memorized(ctx.model, prompt if memorize else None):
        state = PrefixState(ctx.model, prompt)
        stop = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        answer = tok.decode(state.greedy(max_new_tokens, stop), skip_special_tokens=True)
        candidates = [key, *distractors]
        scores = state.score([ids(tok, " " + c) for c in candidates]) if distractors else []
    found = _DIGITS.search(answer)
    rank = 1 + sum(s.ll >= scores[0].ll for s in scores[1:]) if scores else 0  # a tie is a miss
    return ItemScore(bool(found and found.group() == key), rank, answer.strip()[:40])


class UnscorableLength(Exception):
    """A prompt length the model cannot run (e.g. beyond learned positions); the length is skipped."""


def score_with_and_without_memory(ctx: EvalContext, prompt: list[int], key: str, distractors: list[str],
                                  answer_tokens: int, memorize: bool) -> dict:
    """One item's scores, plus the same item after test-time memorization of its prompt when asked."""
    try:
        out = score_item(ctx, prompt, key, distractors, False, answer_tokens).to_dict()
        if memorize:
            out.update(score_item(ctx, prompt, key, distractors, True, answer_tokens).to_dict("_memorize"))
    except (ValueError, IndexError, RuntimeError) as exc:
        raise UnscorableLength(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc
    return out


def summarize(rows: list[dict], suffix: str = "") -> dict:
    """exact-match and rank-1 accuracy with Wilson intervals, and mean reciprocal rank, over rows."""
    n = len(rows)
    exact = sum(bool(r[f"exact{suffix}"]) for r in rows)
    first = sum(r[f"rank{suffix}"] == 1 for r in rows)
    ranked = [r[f"rank{suffix}"] for r in rows if r[f"rank{suffix}"]]
    return {
        f"exact_match{suffix}": exact / n if n else None,
        f"exact_match{suffix}_ci95": wilson_interval(exact, n),
        f"rank_accuracy{suffix}": first / n if n and ranked else None,
        f"rank_accuracy{suffix}_ci95": wilson_interval(first, n),
        f"mrr{suffix}": sum(1 / r for r in ranked) / len(ranked) if ranked else None,
    }


def split_summary(summary: dict) -> tuple[dict[str, float | None], dict[str, tuple[float, float]]]:
    """A ``summarize`` dict -> (metrics, ci95) as EvalResult wants them."""
    metrics = {k: v for k, v in summary.items() if not k.endswith("_ci95")}
    ci95 = {k.removesuffix("_ci95"): v for k, v in summary.items() if k.endswith("_ci95")}
    return metrics, ci95
