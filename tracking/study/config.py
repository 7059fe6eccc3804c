"""The settings of the whole study (`StudyConfig`): models, seeds, tuning, the fair study's
budget and storage; what it logs as the study's parameters."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from models import MODELS
from tracking.config import Config, ConfigError, param_text
from tuning.config import PRUNERS, TuneConfig

STUDY_KIND = "study"  # value of the run_kind tag on the parent run
TASK_TAG = "study_task"  # a fair study's final run: its task's number in the work queue
DEFAULT_MODELS = tuple(MODELS)  # every registered model (the original four)
DEFAULT_OUTPUT = os.path.join("outputs", "study")
FAIR_OUTPUT = os.path.join("outputs", "fair_study")  # --tune-budget: not over a plain study's


@dataclass(frozen=True)
class StudyConfig:
    dataset: str = "digits"  # key in tracking.data.loaders.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are
    models: tuple[str, ...] = DEFAULT_MODELS  # trained in this order for every seed
    seeds: int = 3  # runs per model, seeds 0..seeds-1: the error bars
    epochs: int | None = None  # None = each model's recipe (early stopping may end sooner)
    limit: int = 0  # keep at most this many images, split afterwards (0 = all); for smoke runs
    tune: bool = False  # also run the ResNet-50 Optuna study (tuning.optuna_resnet)
    tune_trials: int = 20  # its total trials
    tune_max_epochs: int = 10  # upper bound of its tuned epochs
    tune_model: str = "resnet50"  # the model tuned (another one only for quick tests)
    precision: str = "auto"  # Keras dtype policy of every run (tracking.precision)
    experiment: str = Config().experiment  # MLflow experiment
    output: str = DEFAULT_OUTPUT  # folder for comparison.md and the figures
    tune_budget: tuple[int, int] | None = None  # (trials, max epochs) per model: fair study
    pruner: str = "median"  # of every tuning study (tuning.config.PRUNERS)
    seeds_per_trial: int = 1  # seeds each trial trains (its value is their mean)
    split_seed: int = 0  # fair study: the one data split, and the tuning's first seed
    promote: bool = True  # fair study: champion or challenger for its best tuned model
    storage: str = ""  # fair study: the Optuna storage its workers share ("" = optuna.db)
    study_name: str = ""  # fair study: its name there ("" = fair-<dataset>-<settings digest>)
    # each tuning trial in its own process (tuning.trial_process); this worker's choice, not
    # part of the study's identity (to_params): workers may differ in it
    trial_process: bool = TuneConfig.trial_process

    def __post_init__(self) -> None:
        for name in ("seeds", "tune_trials", "tune_max_epochs", "seeds_per_trial"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.tune_budget is not None and (
                len(self.tune_budget) != 2 or any(
                    not isinstance(v, int) or isinstance(v, bool) or v < 1
                    for v in self.tune_budget)):
            raise ConfigError(f"tune_budget must be two positive integers (trials, max "
                              f"epochs), got {self.tune_budget!r}")
        if self.tune_budget is not None and self.tune:
            raise ConfigError("--tune (ResNet-50 alone) and --tune-budget (every model) "
                              "exclude each other")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got "
                              f"{self.pruner!r}")
        if not isinstance(self.split_seed, int) or self.split_seed < 0:
            raise ConfigError(f"split_seed must be a non-negative integer, got "
                              f"{self.split_seed!r}")
        if not self.models:
            raise ConfigError("models must name at least one model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models must not repeat, got {','.join(self.models)}")

    @property
    def fair(self) -> bool:
        return self.tune_budget is not None

    def seed_list(self) -> list[int]:
        """The training seeds of the runs scored on the test split: 0..N-1, or in the fair
        study the N seeds after the tuning's (split_seed .. split_seed + seeds_per_trial - 1)."""
        first = self.split_seed + self.seeds_per_trial if self.fair else 0
        return list(range(first, first + self.seeds))

    def run_configs(self, seed: int, variant: str = "") -> list[Config]:
        """The training Config of every model for one seed (raises ConfigError on bad input);
        in the fair study all on the split of split_seed, named by `variant`."""
        fair = {"split_seed": self.split_seed} if self.fair else {}
        tail = f"-{variant}" if variant else ""
        return [Config(model=m, dataset=self.dataset, data_dir=self.data_dir, epochs=self.epochs,
                       seed=seed, limit=self.limit, experiment=self.experiment,
                       precision=self.precision, **fair,
                       run_name=f"{m}-{self.dataset}{tail}-seed{seed}") for m in self.models]

    def fair_study_name(self) -> str:
        """The fair study's name in its storage: --study-name, else one derived from every
        setting that changes its result, so workers started with one command meet."""
        if self.study_name:
            return self.study_name
        settings = json.dumps(self.to_params(), sort_keys=True).encode()
        return f"fair-{self.dataset}-{hashlib.md5(settings, usedforsecurity=False).hexdigest()[:8]}"

    def to_params(self) -> dict[str, str]:
        return {"dataset": self.dataset, "data_dir": self.data_dir,
                "models": ",".join(self.models), "seeds": str(self.seeds),
                "epochs": param_text(self.epochs), "limit": str(self.limit),
                "tune": param_text(self.tune), "tune_trials": str(self.tune_trials),
                "tune_max_epochs": str(self.tune_max_epochs), "tune_model": self.tune_model,
                "precision": self.precision,
                "tune_budget": "x".join(map(str, self.tune_budget or ())) or "none",
                "pruner": self.pruner, "seeds_per_trial": str(self.seeds_per_trial),
                "split_seed": str(self.split_seed),
                "final_seeds": ",".join(map(str, self.seed_list()))}
