"""Online experiments: declaration (`ExperimentConfig`, `ExperimentStore`), sticky assignment by a
salted hash (`Assigner`), attribution of outcomes to impressions and the per-arm report with
confidence intervals and tests (`analyse`), and the replay simulator that drives a server with a
population built from held-out interactions (`recstack.experiments.replay`)."""

from recstack.experiments.analysis import analyse, attribute, ratio_estimate, shown_items
from recstack.experiments.assign import Assigner, bucket
from recstack.experiments.config import (
    HOLDOUT_ARM,
    ArmConfig,
    ExperimentConfig,
    ExperimentStore,
    default_experiments_dir,
)

__all__ = [
    "HOLDOUT_ARM",
    "ArmConfig",
    "Assigner",
    "ExperimentConfig",
    "ExperimentStore",
    "analyse",
    "attribute",
    "bucket",
    "default_experiments_dir",
    "ratio_estimate",
    "shown_items",
]
