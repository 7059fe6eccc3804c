"""The settings of a tuning study: one model, its data, the trial budget, the sampler's seed, the
pruner, the storage.

    config = TuneConfig(model="densenet121", n_trials=20, max_epochs=10).resolved()

`TuneConfig` is what `python -m tuning` and `python -m tuning.optuna_resnet` build from their
flags (tuning.cli) and what the fair study builds per model (tracking.study); `TuneError` is its
bad-input error (exit status 2, before any run starts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tracking.config import Config
from tracking.errors import UsageError
from tuning.storage import default_storage


class TuneError(UsageError):
    """A tuning setting is invalid; the message says which and what is allowed."""


PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class TuneConfig:
    model: str = "resnet50"  # registry key in models.MODELS
    dataset: str = "digits"  # key in tracking.data.loaders.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are
    n_trials: int = 20  # total trials of the study (complete + pruned), over all workers
    timeout: float = 0.0  # seconds after which this worker starts no new trial (0 = none)
    max_epochs: int = 10  # upper bound of the tuned epochs
    study_name: str = ""  # "" = <model>-<dataset>
    storage: str = ""  # SQLAlchemy URL; "" = optuna.db next to a SQLite MLflow store
    seed: int = 0  # splits and initial weights; the sampler's is seed + trials so far
    experiment: str = ""  # MLflow experiment; "" = the training runs' own (Config().experiment)
    limit: int = 0  # keep at most this many images, split afterwards (0 = all); for smoke runs
    full_test: bool = False  # with limit: the final test on the data set's whole test split
    precision: str = "auto"  # Keras dtype policy of every trial (tracking.precision)
    pruner: str = "median"  # one of PRUNERS
    seeds_per_trial: int = 1  # seeds each trial trains; its value is their mean
    final_test: bool = True  # score the best trial on the test split, register <model>-tuned
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int = 240  # a trial silent for this long belongs to a dead worker
    # when the total is taken: wait for trials running elsewhere to end (the fair study's
    # workers, whose next step needs the study's final best trial) instead of leaving
    wait_for_running: bool = False
    # each trial in a child process of its own (tuning.trial_process): the worker's memory
    # stays flat and a trial that crashes its process fails alone; in process a ResNet-50
    # worker grew by about 570 MiB a trial (tuning.memory_benchmark, docs/benchmarks.md)
    trial_process: bool = True

    def __post_init__(self) -> None:
        for name in ("n_trials", "max_epochs", "seeds_per_trial", "heartbeat_interval",
                     "grace_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TuneError(f"{name} must be a positive integer, got {value!r}")
        if not self.timeout >= 0:
            raise TuneError(f"timeout must be a number of seconds >= 0, got {self.timeout!r}")
        if self.pruner not in PRUNERS:
            raise TuneError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")

    def resolved(self) -> TuneConfig:
        """Fill study name, storage and experiment left empty."""
        return replace(self, study_name=self.study_name or f"{self.model}-{self.dataset}",
                       storage=self.storage or default_storage(),
                       experiment=self.experiment or Config().experiment)

    def base_config(self) -> Config:
        """The training Config every trial starts from (raises ConfigError on bad input)."""
        return Config(model=self.model, dataset=self.dataset, data_dir=self.data_dir,
                      seed=self.seed, split_seed=self.seed,  # every trial on one split
                      experiment=self.resolved().experiment,
                      limit=self.limit, full_test=self.full_test,
                      evaluate_test=False, precision=self.precision,
                      checkpoint_every=0)  # a lost trial is retried whole, never resumed
