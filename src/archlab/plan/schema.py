"""What a plan file and a single run look like (pydantic; unknown keys are errors)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from archlab.config import Config
from archlab.data import DataConfig
from archlab.evals import EvalSpec
from archlab.evals.base import check_eval_objective
from archlab.files import SLUG_RULE, is_slug
from archlab.graft import GraftConfig
from archlab.models.spec import ModelConfig
from archlab.nn.memory import MemoryBranch
from archlab.plan.match import MatchConfig
from archlab.train import TrainConfig
from archlab.train.schedules import out_of_range, resolve_eval_value

DEFAULT_EVALS = [{"name": "loss"}, {"name": "generate_samples"}]
DEFAULT_MASKED_DIFFUSION_EVALS = [{"name": "masked_loss"}]


class Resources(Config):
    """What one run asks of an executor: where it runs, not what it computes (not part of its id)."""

    gpus: int | None = Field(None, ge=0, description="GPUs the run needs: the local pool waits for this many free "
                             "ones (more than 1: one torchrun rank per GPU, DDP); ray requests them; default: 1 "
                             "with --gpus, else 0")
    cpus: float = Field(1, gt=0, description="ray: CPUs requested for the run's task")


class RunConfig(Config):
    """Everything one run needs; written resolved to runs/<plan>/<run-id>/config.yaml."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="architecture or pretrained model")
    data: DataConfig = Field(default_factory=DataConfig, description="data source, tokenizer and packing")
    graft: GraftConfig | None = Field(None, description="memory grafted into the model's attention (seed 000: "
                                      "TPTT/LiZA memory-as-gate); none by default")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation (HF TrainingArguments names)")
    eval: list[EvalSpec] = Field(
        default_factory=lambda: [EvalSpec.model_validate(e) for e in DEFAULT_EVALS],
        description="evals run after training, each {name: ..., <params>}",
    )
    match: MatchConfig | None = Field(None, description="match: params sizes this run's width (or depth, match.by) "
                                      "to the baseline's parameter count within 2%, at plan time")
    resources: Resources | None = Field(None, description="executor requests: {gpus: k, cpus: c}; placement "
                                        "only, so it is not part of the run id")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if data.get("resources") is None:  # a run that asks nothing writes the config.yaml it always did
            data.pop("resources", None)
        if not data.get("needs"):
            data.pop("needs", None)  # runs without dependencies keep the ids they had before the key existed
        return data

    @model_validator(mode="after")
    def _objective(self) -> RunConfig:
        """Resolve train.objective and check that every eval can score it.

        The rule: a bidirectional graft sees the tokens it would predict, so its runs train and are scored
        with the masked-diffusion objective (``auto`` resolves to it; ``causal_lm`` is an error). Such a run
        gets a mask token (``data.add_mask_token``) and, when it lists no evals, ``masked_loss``.
        """
        bidirectional = self.graft is not None and self.graft.bidirectional
        if self.train.objective == "auto":
            self.train.objective = "masked_diffusion" if bidirectional else "causal_lm"
        if bidirectional and self.train.objective != "masked_diffusion":
            raise ValueError("graft.bidirectional=true with train.objective=causal_lm: the memory sees the next "
                             "token it is trained to predict; use train.objective=masked_diffusion (or auto)")
        if self.train.objective == "masked_diffusion":
            self.data.add_mask_token = True
            if "eval" not in self.model_fields_set:
                self.eval[:] = [EvalSpec.model_validate(e) for e in DEFAULT_MASKED_DIFFUSION_EVALS]
        check_eval_objective(self.eval, self.train.objective)
        return self

    @model_validator(mode="after")
    def _resolve_eval_values(self) -> RunConfig:
        """Record the value of every scheduled attribute that evaluation uses (what is evaluated is
        what was trained), so the resolved config.yaml says it and `archlab eval` reproduces in-run numbers."""
        for name, spec in self.train.schedules.items():
            if name == "mag_weight" and self.graft is not None:  # checked here, before its eval value is assigned
                problem = out_of_range(name, spec, MemoryBranch.scheduled_ranges[name])
                if problem:
                    raise ValueError(problem)
            given = self.graft.eval_mag_weight if name == "mag_weight" and self.graft is not None else None
            value = given if given is not None else resolve_eval_value(spec, self.train.max_steps)
            if value is None:
                key = "graft.eval_mag_weight" if name == "mag_weight" else f"train.schedules.{name}.eval_value"
                raise ValueError(f"train.schedules.{name} is {spec.type}: say which value evaluation uses with {key}")
            if spec.eval_value != value:
                spec.eval_value = value
        if self.graft is not None and self.graft.eval_mag_weight is None:
            spec = self.train.schedules.get("mag_weight")
            self.graft.eval_mag_weight = spec.eval_value if spec is not None else self.graft.mag_weight
        return self

    needs: dict[str, str] = Field(default_factory=dict, description="dotted config key -> id of another run of the "
                                  "plan whose exported model folder the key is set to when this run starts (written "
                                  "by the plan's block 'needs'; the executor runs that run first)")


    def eval_values(self) -> dict[str, float]:
        """Scheduled model attributes and the values every evaluation sets them to (e.g. mag_weight)."""
        values = {name: float(spec.eval_value) for name, spec in self.train.schedules.items()
                  if spec.eval_value is not None}
        if self.graft is not None and self.graft.eval_mag_weight is not None:
            values["mag_weight"] = self.graft.eval_mag_weight
        return values


class Rule(Config):
    when: dict[str, Any] = Field(description="axis labels or dotted keys that must all match (also 'profile')")
    set: dict[str, Any] = Field(description="dotted keys set on every matching run")


class Block(Config):
    """A group of runs: the cross product of ``matrix``, each with ``set`` applied, listed under ``section``."""

    section: str | None = Field(None, description="report table the runs appear in")
    name: str | None = Field(None, description="explicit run name (single-run blocks only)")
    matrix: dict[str, list[Any]] = Field(default_factory=dict, description="axis -> labels, or dotted key -> values")
    set: dict[str, Any] = Field(default_factory=dict, description="axis labels or dotted keys fixed for these runs")
    description: str = Field("", description="shown under the section title in the report")
    needs: dict[str, str] = Field(default_factory=dict, description="dotted config key -> name of a single-run "
                                  "block whose trained model folder it receives at run time (e.g. "
                                  "{model.config.entropy_model_path: entropy}); that run goes first, and these "
                                  "runs fail with one line if it did not finish")


class Profile(Config):
    description: str = Field("", description="what this profile is for")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted keys applied on top of defaults")
    axes: dict[str, dict[str, dict[str, Any] | None]] = Field(
        default_factory=dict, description="per-label overrides merged into the plan's axes"
    )


class PlanConfig(Config):
    name: str = Field(description="plan name; runs go to runs/<name>/")
    description: str = Field("", description="one paragraph shown at the top of the report")
    defaults: dict[str, Any] = Field(default_factory=dict, description="settings shared by every run (RunConfig)")
    axes: dict[str, dict[str, dict[str, Any] | None]] = Field(
        default_factory=dict, description="named axes: label -> dotted keys it sets (e.g. operator: {delta_rule: ...})"
    )
    matrix: dict[str, list[Any]] = Field(default_factory=dict, description="cross product of the main block")
    section: str | None = Field(None, description="report section of the main matrix block")
    include: list[Block] = Field(default_factory=list, description="extra blocks of runs")
    rules: list[Rule] = Field(default_factory=list, description="when/set overrides applied after the axes")
    baseline: dict[str, Any] | None = Field(None, description="labels/keys identifying the run others are compared to")
    profiles: dict[str, Profile] = Field(default_factory=dict, description="named variants, e.g. smoke vs full")
    default_profile: str | None = Field(None, description="profile used when none is given")
    metrics: list[str] = Field(
        default_factory=lambda: ["loss.loss", "loss.bits_per_byte", "loss.accuracy"],
        description="report columns, as <eval>.<metric>",
    )
    headline: str = Field("loss.loss", description="<eval>.<metric> charted and compared to the baseline")
    lower_is_better: bool = Field(True, description="direction of the headline metric")

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, name: str) -> str:
        if not is_slug(name):
            raise ValueError(f"a plan name becomes a folder under the runs root, so it must be a slug: {SLUG_RULE} "
                             f"(e.g. my_plan)")
        return name
