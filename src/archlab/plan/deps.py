"""When a run may start in an executor that runs several at once (the local pool, Ray): after every run
of this plan that it ``needs`` is done. A run whose dependency ended otherwise is not started: it fails
in one line naming the dependency (run the plan again once that one is fixed)."""

from __future__ import annotations

from archlab.plan.executor import Outcome
from archlab.plan.expand import RunSpec

READY, WAIT = "ready", "wait"


def gate(spec: RunSpec, outcomes: dict[str, Outcome], plan_ids: set[str]) -> str | Outcome:
    """``READY``, ``WAIT``, or the failed ``Outcome`` of a run whose dependency did not finish.

    A needed run outside this plan's runs (e.g. filtered out by ``--only``) is the runner's to check: it
    reads that run's folder when the dependent starts.
    """
    for key, dep in spec.config.needs.items():
        if dep not in plan_ids:
            continue
        if dep not in outcomes:
            return WAIT
        if outcomes[dep].status != "done":
            return Outcome(spec.id, "failed", f"not started: needs run {dep} (for {key}), which is "
                           f"{outcomes[dep].status}; fix that run and run the plan again")
    return READY
