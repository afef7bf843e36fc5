"""Training: the LightningModule, losses, callbacks and the run engine."""

from emofusion.training.config import RunConfig
from emofusion.training.module import EmoFusionModule
from emofusion.training.run import RunResult, evaluate_split, load_module, train_run

__all__ = ["RunConfig", "EmoFusionModule", "RunResult", "train_run", "evaluate_split", "load_module"]
