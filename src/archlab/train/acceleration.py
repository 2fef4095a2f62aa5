"""The fast defaults of training: which precision (``bf16: auto``) and whether to compile (``torch_compile:
auto``), decided from the machine and from measurements, never from a guess.

Precision (``resolve_precision``), for ``bf16: auto``:

- ``fp16: true`` given: fp16 autocast with loss scaling (GradScaler);
- CUDA: ``archlab.train.precision.precision_for`` by compute capability (>= 8.0 bf16; 7.x, T4 and V100,
  fp16 autocast with loss scaling; older fp32);
- a CPU with native bf16 (``avx512_bf16`` / AMX, read from the CPU flags: ``archlab.hardware``): bf16 autocast;
- otherwise fp32.

Autocast keeps the master weights and the optimizer state in fp32 either way.

Compilation (``CompileDecision``), for ``torch_compile: auto``: a run shorter than ``MIN_STEPS`` optimizer
steps never compiles (tests, smoke runs), nor does a model whose ``compile_auto_opt_out`` says why not. A longer run trains its first ``PROBE_STEPS`` steps eagerly, takes
the median eager step time ``t`` of the last ``PROBE_STEPS - 1`` of them, and compiles when the time the
compiled model saves on the remaining ``R`` steps at an assumed ``ASSUMED_SPEEDUP`` (1.2x, what Inductor gave
archlab's decoder on CPU) repays the expected compile time ``C``::

    R * t * (1 - 1 / ASSUMED_SPEEDUP) > C

``C`` is the compile time of the last compiled run on this machine and device type, kept in units of that
run's eager step (``hardware/compile_seconds.json`` under the archlab cache) and scaled by this run's ``t``,
so that a compile measured on a loaded machine does not mislead a run on a quiet one;
``DEFAULT_COMPILE_SECONDS`` before the first compiled run. Each compiled run records its measured compile
time (first compiled step minus an eager step) in ``metrics.jsonl`` and refreshes that cache.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

import torch

from archlab.files import atomic_write
from archlab.hardware import cache_dir, native_bf16
from archlab.train.precision import precision_for

MIN_STEPS = 100
PROBE_STEPS = 5
ASSUMED_SPEEDUP = 1.2
DEFAULT_COMPILE_SECONDS = {"cpu": 60.0, "cuda": 60.0}
COMPILE_FILE = "compile_seconds.json"


# dynamo's settings while a compiled training step runs (so while it traces): an op whose output shape depends on
# the data (byte_latent's entropy patches: the patch count) stays in the graph with an unbacked size instead of
# breaking it; scoped to the step, never set globally. tests/models/test_graph_breaks.py compiles under it too
COMPILE_DYNAMO_CONFIG = {"capture_dynamic_output_shape_ops": True}


def compile_scope():
    """The context a compiled training step runs in (``COMPILE_DYNAMO_CONFIG``)."""
    return torch._dynamo.config.patch(**COMPILE_DYNAMO_CONFIG)


def resolve_precision(bf16: bool | str, fp16: bool, device: torch.device | str) -> str:
    """``bf16`` / ``fp16`` / ``fp32``: the autocast precision of a run (see the module docstring)."""
    device = torch.device(device)
    if bf16 is True:
        return "bf16"
    if fp16:
        return "fp16"
    if bf16 is False:
        return "fp32"
    if device.type == "cuda":  # one GPU rule for runs and plan profiles: archlab.train.precision
        rule = precision_for(torch.cuda.get_device_capability(device))
        return "fp32" if rule == "no" else rule
    return "bf16" if native_bf16(device) else "fp32"


def accelerate_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` name of a precision."""
    return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]


def expected_compile_seconds(device_type: str, eager_step_seconds: float) -> float:
    """The compile time to expect now: the last compiled run's compile time in units of its own eager step,
    times this run's eager step. Both inflate alike on a loaded machine, so a compile measured under load
    no longer tells every later run on a quiet machine that compiling never pays (it did: 799 s, cached)."""
    try:
        table = json.loads((cache_dir() / COMPILE_FILE).read_text())
        steps = float(table[device_type]["compile_in_eager_steps"])
        if steps > 0 and eager_step_seconds > 0:
            return steps * eager_step_seconds
    except (OSError, ValueError, KeyError, TypeError):
        pass  # nothing measured yet (or the older seconds-only format, which had this flaw)
    return DEFAULT_COMPILE_SECONDS.get(device_type, 60.0)


def remember_compile_seconds(device_type: str, seconds: float, eager_step_seconds: float) -> None:
    if not (seconds > 0 and eager_step_seconds > 0):
        return
    path = cache_dir() / COMPILE_FILE
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    table[device_type] = {"compile_in_eager_steps": round(seconds / eager_step_seconds, 1),
                          "compile_seconds": round(seconds, 2), "eager_step_seconds": round(eager_step_seconds, 4)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(table, indent=1))
    except OSError:
        pass


@dataclass
class CompileDecision:
    """Whether and when a run compiles; fed the eager step times while it probes."""

    setting: bool | str
    total_steps: int
    device_type: str
    step_seconds: list[float] = field(default_factory=list)
    decided: bool | None = None
    reason: str = ""
    model_opts_out: str = ""  # the model's ``compile_auto_opt_out``: why ``auto`` should never compile it

    def __post_init__(self) -> None:
        if self.setting is True:
            self.decided, self.reason = True, "train.torch_compile=true"
        elif self.setting is False:
            self.decided, self.reason = False, "train.torch_compile=false"
        elif self.model_opts_out:
            self.decided, self.reason = False, f"auto: {self.model_opts_out}"
        elif self.total_steps < MIN_STEPS:
            self.decided, self.reason = False, f"auto: {self.total_steps} steps < {MIN_STEPS}"

    def observe(self, seconds: float, steps_done: int) -> bool | None:
        """Record one eager step's time; returns the decision once made (None while still probing)."""
        if self.decided is not None:
            return self.decided
        self.step_seconds.append(seconds)
        if len(self.step_seconds) < PROBE_STEPS:
            return None
        eager = statistics.median(self.step_seconds[1:])  # the first step pays one-time warm-up
        remaining = max(self.total_steps - steps_done, 0)
        saving = remaining * eager * (1 - 1 / ASSUMED_SPEEDUP)
        cost = expected_compile_seconds(self.device_type, eager)
        self.decided = saving > cost
        self.reason = (f"auto: {remaining} steps x {eager:.3f} s eager x (1 - 1/{ASSUMED_SPEEDUP}) = {saving:.0f} s "
                       f"saved {'>' if self.decided else '<='} {cost:.0f} s expected compile time")
        return self.decided

    @property
    def eager_step_seconds(self) -> float | None:
        return statistics.median(self.step_seconds[1:]) if len(self.step_seconds) > 1 else None
