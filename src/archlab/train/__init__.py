"""Training: the loop on accelerate, optimizers, parameter schedules, callbacks, checkpoints."""

from archlab.train.callbacks import Callback, MetricsLog, RichProgress
from archlab.train.config import ScheduleSpec, TrainConfig
from archlab.train.loop import Diverged, Trainer, TrainState, validation_loss
from archlab.train.schedules import SCHEDULES

__all__ = ["SCHEDULES", "Callback", "Diverged", "MetricsLog", "RichProgress", "ScheduleSpec", "TrainConfig",
           "TrainState", "Trainer", "validation_loss"]
