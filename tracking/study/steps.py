"""The steps both studies share: one seed's data, one training run, the runs of one seed (recipe,
and in the fair study tuned), one model's Optuna study under the study's parent run."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import keras
import mlflow

from tracking.comparison.groups import RECIPE, TUNED, VARIANT_TAG
from tracking.config import Config, load_for
from tracking.data.dataset import Dataset
from tracking.store.lifecycle import StopRun
from tracking.study.config import StudyConfig
from tracking.training.loop import train
from tuning.config import TuneConfig
from tuning.space import trial_config
from tuning.study import run_tuning_study


def load(config: StudyConfig, seed: int) -> Dataset:
    """The data of one seed's runs (the fair study: the one split, whatever the seed)."""
    return load_for(config.run_configs(seed)[0])


def train_one(run_config: Config, data: Dataset, tags: dict[str, str] | None) -> str:
    """One of the study's training runs (a fresh Keras session); its run id. Raises StopRun
    when the run was stopped (a NaN loss), said on stderr."""
    keras.backend.clear_session()
    print(f"study: training {run_config.run_name}", file=sys.stderr, flush=True)
    try:
        return train(run_config, data, tags=tags)["run_id"]
    except StopRun as stop:
        print(f"study: {run_config.run_name} stopped: {stop.reason}", file=sys.stderr)
        raise


def final_runs(config: StudyConfig, seed: int, tuning: dict[str, dict[str, Any] | None]
               ) -> list[tuple[Config, dict[str, str] | None]]:
    """(Config, tags) of one seed's runs: every model at its recipe; in the fair study also
    every model at its best tuned setting (when its study completed a trial)."""
    if not config.fair:
        return [(c, None) for c in config.run_configs(seed)]
    out = []
    for recipe, tuned in zip(config.run_configs(seed, RECIPE), config.run_configs(seed, TUNED),
                             strict=True):
        out.append((recipe, {VARIANT_TAG: RECIPE}))
        summary = tuning.get(recipe.model)
        if summary and summary.get("best_params"):
            # the study's epochs bound the tuned run, not --epochs (which shrinks recipes)
            point = dict(summary["best_params"])
            out.append((trial_config(replace(tuned, epochs=None), point, tuned.run_name),
                        {VARIANT_TAG: TUNED, "tuning_run_id": summary["parent_run_id"],
                         "tuned_trial": str(summary["best_trial"])}))
    return out


def run_tuning(config: StudyConfig, parent_run_id: str, model: str,
               data: Dataset | None = None, *, storage: str = "", study_name: str = ""
               ) -> dict[str, Any] | None:
    """The Optuna study of `model` (tuning.study), its run nested in the study's: in the fair
    study with its budget on the split of `data`, the test split left to the final runs, in
    the shared `storage` as `study_name`, waiting for the trials other workers still run.

    Returns its summary, None if tuning failed (the trained models still get their report;
    the reason is tagged on the study's run).
    """
    trials, max_epochs = config.tune_budget or (config.tune_trials, config.tune_max_epochs)
    tune = TuneConfig(model=model, dataset=config.dataset, data_dir=config.data_dir,
                      n_trials=trials, max_epochs=max_epochs,
                      study_name=study_name or f"{model}-{config.dataset}-study-"
                                               f"{parent_run_id[:8]}",
                      storage=storage, experiment=config.experiment, limit=config.limit,
                      precision=config.precision, pruner=config.pruner,
                      seeds_per_trial=config.seeds_per_trial,
                      seed=config.split_seed if config.fair else 0,
                      final_test=not config.fair, wait_for_running=config.fair,
                      trial_process=config.trial_process)
    print(f"study: tuning {tune.model} ({tune.n_trials} trial{'' if tune.n_trials == 1 else 's'})",
          file=sys.stderr, flush=True)
    client = mlflow.MlflowClient()  # the parent may be another worker's, not active here
    try:
        summary = run_tuning_study(tune, data=data, parent_run_id=parent_run_id)
    except Exception as err:  # noqa: BLE001 - the trained models still get their report
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:250]
        client.set_tag(parent_run_id, f"tuning_failed.{model}" if config.fair
                       else "tuning_failed", reason)
        print(f"study: tuning {model} failed ({reason}); reporting the training runs",
              file=sys.stderr)
        return None
    client.set_tag(parent_run_id, f"tuning_run_id.{model}" if config.fair else "tuning_run_id",
                   summary["parent_run_id"])
    return summary
