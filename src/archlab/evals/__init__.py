"""Evaluations: each a registered function spec -> eval/<name>.json with n and 95% intervals.

Each module here registers the eval it is named after (and declares its report view beside it, see
lib/views.py); shared helpers live in ``archlab.evals.lib``.
"""

from archlab.evals import (  # noqa: F401  (registers the built-in evals)
    compression,
    continual,
    duo_predict,
    generate_samples,
    inner_updates,
    long_ppl,
    loss,
    masked_loss,
    mc,
    memory,
    model_size,
    multilingual_bpb,
    niah,
    passkey,
    probes,
    speed,
    unk_share,
)
from archlab.evals.base import EVALS, EvalContext, EvalResult, EvalSpec, register_eval, run_eval
from archlab.evals.lib.views import EVAL_VIEWS, EvalRun, View, eval_view, simple_view

__all__ = ["EVALS", "EVAL_VIEWS", "EvalContext", "EvalResult", "EvalRun", "EvalSpec", "View", "eval_view",
           "register_eval", "run_eval", "simple_view"]
