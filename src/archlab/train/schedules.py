"""Parameter schedules: a value per optimizer step for a named model attribute (mag_weight, teach_scale, ...).

Each schedule is a pure function of the step, so an exactly resumed run needs no schedule state.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from archlab.errors import ArchlabError
from archlab.registry import Registry
from archlab.train.config import ScheduleSpec

Schedule = Callable[[int], float]
SCHEDULES: Registry[Callable[[ScheduleSpec], Schedule]] = Registry("schedule")


def _need(spec: ScheduleSpec, *names: str) -> None:
    missing = [n for n in names if getattr(spec, n) is None]
    if missing:
        raise ArchlabError(f"schedule type '{spec.type}' needs {', '.join(missing)}")


@SCHEDULES.register("constant")
def constant(spec: ScheduleSpec) -> Schedule:
    """The same value every step."""
    _need(spec, "value")
    return lambda step: float(spec.value)


@SCHEDULES.register("linear")
def linear(spec: ScheduleSpec) -> Schedule:
    """From start to end over 'steps' optimizer steps, then end (seed 000's 'transition over N')."""
    _need(spec, "start", "end", "steps")
    start, end, steps = float(spec.start), float(spec.end), int(spec.steps)
    return lambda step: end if step >= steps else start + (end - start) * step / max(steps, 1)


@SCHEDULES.register("cyclic")
def cyclic(spec: ScheduleSpec) -> Schedule:
    """values[step mod len(values)] (seed 000's alternating [0, 0.5])."""
    _need(spec, "values")
    values = [float(v) for v in spec.values or []]
    if not values:
        raise ArchlabError("schedule type 'cyclic' needs a non-empty 'values' list")
    return lambda step: values[step % len(values)]


@SCHEDULES.register("warmup_decay")
def warmup_decay(spec: ScheduleSpec) -> Schedule:
    """0 -> peak over warmup_steps, hold, then linear to final between decay_start and decay_end (seed 003)."""
    _need(spec, "peak", "warmup_steps")
    peak = float(spec.peak)
    final = float(spec.final if spec.final is not None else peak)
    warm = int(spec.warmup_steps)
    d0 = spec.decay_start if spec.decay_start is not None else 10**12
    d1 = spec.decay_end if spec.decay_end is not None else d0

    def value(step: int) -> float:
        if step < warm:
            return peak * (step + 1) / warm
        if step < d0:
            return peak
        if step >= d1:
            return final
        return peak + (final - peak) * (step - d0) / max(d1 - d0, 1)

    return value


@SCHEDULES.register("piecewise")
def piecewise(spec: ScheduleSpec) -> Schedule:
    """values[k] where k boundaries are <= the step (or epoch, unit: epoch): seed 002's staged clipping
    {boundaries: [10, 30], values: [0.5, 1.0, 2.0], unit: epoch}."""
    _need(spec, "values", "boundaries")
    values, bounds = [float(v) for v in spec.values or []], [float(b) for b in spec.boundaries or []]
    if len(values) != len(bounds) + 1:
        raise ArchlabError(f"schedule type 'piecewise' needs one more value than boundaries (got {len(values)} "
                           f"values, {len(bounds)} boundaries)")
    if bounds != sorted(bounds):
        raise ArchlabError(f"schedule type 'piecewise': boundaries must be ascending, got {bounds}")
    return lambda x: values[bisect.bisect_right(bounds, x)]


def build_schedule(spec: ScheduleSpec, steps_per_epoch: int | None = None) -> Schedule:
    """The schedule as a function of the optimizer step. ``unit: epoch`` schedules read the 0-based epoch
    index ``step // steps_per_epoch`` (checking a plan passes no steps_per_epoch: one step per epoch)."""
    schedule = SCHEDULES.get(spec.type)(spec)
    if spec.unit == "epoch":
        per_epoch = max(int(steps_per_epoch or 1), 1)
        return lambda step: schedule(step // per_epoch)
    return schedule


TRAINER_ATTRIBUTES = ("max_grad_norm",)
"""Schedule targets the trainer itself applies (train keys), not model attributes."""
TRAINER_RANGES = {"max_grad_norm": (0.0, float("inf"))}


def schedule_span(spec: ScheduleSpec) -> tuple[float, float] | None:
    """The least and greatest value the schedule takes with its eval_value (every built-in type is piecewise linear
    between the values it names; warmup_decay rises from peak / warmup_steps); None for a type registered
    elsewhere, whose values are not known without running it."""
    named = {"constant": [spec.value], "linear": [spec.start, spec.end], "cyclic": spec.values or [],
             "piecewise": spec.values or [], "warmup_decay": [spec.peak, spec.final]}.get(spec.type)
    values = [float(v) for v in [*(named or []), spec.eval_value] if v is not None]
    if spec.type == "warmup_decay" and spec.peak is not None and spec.warmup_steps:
        values.append(float(spec.peak) / spec.warmup_steps)
    return (min(values), max(values)) if named is not None and values else None


def out_of_range(name: str, spec: ScheduleSpec, bounds: tuple[float, float]) -> str | None:
    """Why the schedule of ``name`` leaves ``bounds`` (the attribute's valid values); None when it stays inside."""
    span = schedule_span(spec)
    if span is None:
        return None
    low, high = span
    if bounds[0] <= low and high <= bounds[1]:
        return None
    bad = low if low < bounds[0] else high
    upper = "" if bounds[1] == float("inf") else f", {bounds[1]:g}]"
    allowed = f"in [{bounds[0]:g}{upper}" if upper else f">= {bounds[0]:g}"
    return f"train.schedules.{name} ({spec.type}) reaches {bad:g}, but {name} must be {allowed}"


def attribute_bounds(model: nn.Module, name: str) -> tuple[float, float] | None:
    """The valid values of a scheduled attribute, as the modules that declare it say (``scheduled_ranges``)."""
    if name in TRAINER_RANGES:
        return TRAINER_RANGES[name]
    for module in model.modules():
        if name in getattr(module, "scheduled_attributes", ()) and name in getattr(module, "scheduled_ranges", {}):
            return module.scheduled_ranges[name]
    return None


SETTLED = {"constant": lambda s: s.value, "linear": lambda s: s.end, "piecewise": lambda s: (s.values or [None])[-1],
           "warmup_decay": lambda s: s.final if s.final is not None and s.decay_start is not None else s.peak}


def resolve_eval_value(spec: ScheduleSpec, max_steps: int) -> float | None:
    """The value evaluation uses: ``eval_value`` when set, else the value at the final optimizer step.

    With ``max_steps <= 0`` (epochs) the step count is known only once the data is, so the value the schedule
    settles at is used. A cyclic schedule has no final value worth assuming: None (the caller must ask).
    """
    if spec.eval_value is not None:
        return float(spec.eval_value)
    if spec.type == "cyclic":
        return None
    if max_steps > 0 and spec.unit == "step":
        return float(build_schedule(spec)(max_steps - 1))
    settled = SETTLED.get(spec.type)
    return float(settled(spec)) if settled is not None else None


def set_model_attribute(model: nn.Module, name: str, value: float) -> int:
    """Set ``name`` on every submodule that declares it; returns how many were set."""
    count = 0
    for module in model.modules():
        if name in getattr(module, "scheduled_attributes", ()):
            setattr(module, name, value)
            count += 1
    return count


@contextmanager
def evaluation_values(model: nn.Module, values: dict[str, float]) -> Iterator[None]:
    """Set scheduled attributes to their evaluation values for the block, then restore the training values."""
    saved = [(module, name, getattr(module, name)) for name in values for module in model.modules()
             if name in getattr(module, "scheduled_attributes", ())]
    for name, value in values.items():
        set_model_attribute(model, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
