"""The tracked training loop: one model trained inside one MLflow run, everything logged.

    results = train(Config(model="vgg19", epochs=10))        # dict: run_id, test_accuracy, ...
    results = train(resume_config(run_id), resume_run_id=run_id)   # continue an interrupted run

`train(config) -> results` is what `python -m tracking.train`, the tuning trials and the study
all call. Its steps: resolve the config (the recipe filled in once), load the data
(`tracking.config.load_for`), build and compile the classifier (or resume it), open the run
(`tracking.store.lifecycle.tracked_run`), log the provenance, `fit` with the suite's callbacks
(`tracking.training.callbacks`), then the test evaluation, figures and the logged model
(`tracking.training.finish`). A run logs its whole config as params, per-epoch metrics
(step = epoch), test metrics and reports, figures and the model.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import keras

from tracking.config import Config, load_for
from tracking.data.batches import EpochBatches, full_batches
from tracking.data.dataset import Dataset
from tracking.store.lifecycle import launched_experiment, tracked_run
from tracking.training.callbacks import (
    Checkpointer,
    EpochHistory,
    EpochTimer,
    LearningRateMetric,
    MlflowMetrics,
    NanGuard,
    ProgressLines,
    Validation,
    best_epoch_of,
)
from tracking.training.checkpoints import CheckpointStore
from tracking.training.classifier import build_classifier, compile_classifier, distribution
from tracking.training.determinism import enable_determinism
from tracking.training.finish import finish_run
from tracking.training.offline import keep_offline_if_unreachable, keep_weights_if_disk_refuses
from tracking.training.provenance import log_provenance, run_tags
from tracking.training.resume import StartPoint, resume_point

RESUME_COMMAND = "python -m tracking.train --resume {run_id}"


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall seconds (time.perf_counter) to `timings[key]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started


def fitted_batch_size(config: Config, train_images: int) -> Config:
    """`config` with its batch size cut to `train_images` when the training split is smaller
    than one batch (what fit then trains, and so what `effective_batch_size` logs), saying so
    in one line on stderr; else `config` itself."""
    if config.batch_size <= train_images:
        return config
    print(f"batch size {config.batch_size} cut to {train_images}: the training split has "
          f"only {train_images} images, one batch of them a step", file=sys.stderr)
    return replace(config, batch_size=train_images)


def train(
    config: Config,
    data: Dataset | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    tags: dict[str, str] | None = None,
    resume_run_id: str | None = None,
) -> dict[str, Any]:
    """Train `config.model` on `config.dataset` inside an MLflow run; return its results.

    Runs nested under the active run when there is one (tuning trials, the study).
    `data` defaults to `load_for(config)`; `callbacks` are extra Keras callbacks (e.g. a
    pruner), run after the suite's own; `tags` are set on the run. `resume_run_id` continues
    that run from its last checkpoint (`config` should then be `resume_config(run_id)`).
    Returns what `tracking.training.finish.finish_run` returns, with `timings` of each phase.
    A `StopRun` raised by a callback ends the run with its status and is re-raised; Ctrl-C or
    SIGTERM end it KILLED, resumable; a lost tracking server raises TrackingOffline.
    """
    requested = replace(config, experiment=launched_experiment(config.experiment))
    config, timings = requested.resolved(), {}
    with timed(timings, "data_seconds"):
        data = load_for(config) if data is None else data
    config = fitted_batch_size(config, len(data.y_train))
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        enable_determinism()
    steps_per_epoch = full_batches(len(data.y_train), config.batch_size)
    with distribution(config) as devices:
        start = (resume_point(resume_run_id, config, data) if resume_run_id else StartPoint(
            compile_classifier(build_classifier(config, data), config, steps_per_epoch)))
        with tracked_run(config.experiment, config.display_name, tags=run_tags(config, tags),
                         run_id=resume_run_id, resume_command=RESUME_COMMAND,
                         system_metrics=config.system_metrics) as run, \
                CheckpointStore(run.info.run_id, config.checkpoint_every) as checkpoints:
            run_id, logged_before = run.info.run_id, set()
            with timed(timings, "log_setup_seconds"):
                if resume_run_id:
                    logged_before = start.continue_run(run_id)
                else:
                    log_provenance(requested, config, start.model, data, devices,
                                   steps_per_epoch)

            batches = EpochBatches(data.x_train, data.y_train, config.batch_size, config.seed,
                                   first_epoch=start.epochs_done)
            history, stopper = EpochHistory(start.history), start.early_stopper(config.patience)
            # a terminal has Keras's progress bar; a log file gets a line every ~10 s
            progress = [] if sys.stdout.isatty() else [ProgressLines(config.epochs, len(batches))]
            metrics = MlflowMetrics(run_id, skip_epochs=logged_before, store=checkpoints)
            with timed(timings, "fit_seconds"), keep_weights_if_disk_refuses(
                    run_id, start.model, stopper, history, metrics, checkpoints):
                if not start.finished_by(config):
                    start.model.fit(
                        batches, epochs=config.epochs, initial_epoch=start.epochs_done,
                        shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
                        callbacks=[Validation(data.x_val, data.y_val), LearningRateMetric(),
                                   EpochTimer(batches.images_per_epoch), history, stopper,
                                   Checkpointer(checkpoints, stopper, history), metrics,
                                   NanGuard(), *progress, *callbacks])
                elif start.best_weights is not None:
                    start.model.set_weights(start.best_weights)

            best_epoch = best_epoch_of(stopper, history.epochs)
            with keep_offline_if_unreachable(run_id, start.model, history.epochs, best_epoch,
                                             metrics.pending):
                metrics.flush()
                results = finish_run(start.model, config, data, history.epochs, best_epoch,
                                     run_id, timings, again=resume_run_id is not None)
            checkpoints.drop_all()
    return results
