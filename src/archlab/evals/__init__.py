"""Evaluations: each a registered function spec -> eval/<name>.json with n and 95% intervals."""

from archlab.evals import (  # noqa: F401  (registers the built-in evals)
    compression,
    continual,
    inner_updates,
    long_ppl,
    loss,
    masked_loss,
    mc,
    multilingual,
    niah,
    passkey,
    probes,
    samples,
    speed,
)
from archlab.evals.base import EVALS, EvalContext, EvalResult, EvalSpec, register_eval, run_eval

__all__ = ["EVALS", "EvalContext", "EvalResult", "EvalSpec", "register_eval", "run_eval"]
