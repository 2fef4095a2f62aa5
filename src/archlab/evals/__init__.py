"""Evaluations: each a registered function spec -> eval/<name>.json with n and 95% intervals.

Each module here registers the eval it is named after (and declares its report view beside it, see
lib/views.py); shared helpers live in ``archlab.evals.lib``.
"""

import sys

from archlab.evals import (  # noqa: F401  (registers the built-in evals)
    compression,
    continual,
    duo_predict,
    generate_samples,
    long_ppl,
    loss,
    masked_loss,
    mc,
    memory,
    multilingual_bpb,
    niah,
    passkey,
    probes,
    speed,
)
from archlab.evals.base import EVALS, EvalContext, EvalResult, EvalSpec, register_eval, run_eval
from archlab.evals.lib import loglik, mc_tasks, memorize, ppl, retrieval, stats, texts
from archlab.evals.lib.views import EVAL_VIEWS, EvalRun, View, eval_view, simple_view

# The helpers' old module paths, for code written before they moved to lib/ (e.g. branches in flight);
# new code imports archlab.evals.lib.<name>.
for _helper in (loglik, mc_tasks, memorize, ppl, retrieval, stats, texts):
    sys.modules.setdefault(f"archlab.evals.{_helper.__name__.rpartition('.')[2]}", _helper)

__all__ = ["EVALS", "EVAL_VIEWS", "EvalContext", "EvalResult", "EvalRun", "EvalSpec", "View", "eval_view",
           "register_eval", "run_eval", "simple_view"]
