"""Train one model with everything tracked in MLflow.

    python -m tracking.train --model vgg19 [--dataset digits] [--epochs N] ...
    mlflow run . -P model=vgg19            # the same, through the MLproject

`train(config) -> results` does the work and is what tuning and the study call; `main()`
only turns command-line flags into a `Config`. A run logs its whole config as params,
per-epoch metrics (step = epoch), test metrics and reports, figures and the model.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from tracking.cli import auto_or_number, number
from tracking.config import Config, ConfigError, param_text, same_param
from tracking.data import DataError, Dataset, load_dataset
from tracking.store import ensure_experiment

# --------------------------------------------------------------------------- pieces


def build_classifier(config: Config, data: Dataset) -> Any:
    """The registered model behind a uint8 input: scaling (and augmentation) run on the device."""
    import keras
    from keras import layers

    from models import build_model
    from tracking.recipes import FLIP_SAFE, RECIPES

    core = build_model(config.model, data.image_shape, data.num_classes,
                       **RECIPES[config.model].model_options)
    inputs = keras.Input(data.image_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    shift = RECIPES[config.model].shift
    steps = []
    if config.augment and shift:
        steps.append(layers.RandomTranslation(shift, shift, fill_mode="constant",
                                              seed=config.seed, name="random_shift"))
    if config.augment and config.dataset in FLIP_SAFE:
        steps.append(layers.RandomFlip("horizontal", seed=config.seed, name="random_flip"))
    if steps:
        x = keras.Sequential(steps, name="augment")(x)
    return allow_jit(keras.Model(inputs, core(x), name=config.model))


def allow_jit(model: Any) -> Any:
    """Let JAX compile the training step of a model with random shifts.

    Keras marks RandomTranslation as unfit for XLA (TensorFlow's kernel for it is), and a model
    with one such layer then resolves `jit_compile="auto"` to False: under JAX that runs every
    training step op by op, dozens of times slower. The JAX implementation (an affine
    transform through `jax.scipy`) compiles fine, so under JAX the mark is lifted; on other
    backends nothing changes. The mark is not saved with a model: call this again after
    loading one (resume), before training it.
    """
    import keras

    if keras.backend.backend() != "jax":
        return model
    pending = [model]
    while pending:
        layer = pending.pop()
        if isinstance(layer, keras.layers.RandomTranslation):
            layer.supports_jit = True
        pending.extend(getattr(layer, "layers", []))
    if getattr(model, "compiled", False):
        model.jit_compile = True
    return model


def adopt_launched_run_experiment(config: Config) -> Config:
    """Under `mlflow run` the run already exists (MLFLOW_RUN_ID): its experiment is the one."""
    import mlflow

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or mlflow.active_run() is not None:
        return config
    client = mlflow.MlflowClient()
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    return replace(config, experiment=experiment.name)


def use_distribution(config: Config) -> int:
    """Set Keras's distribution for this run; return the number of devices it uses."""
    import keras

    if config.distribute == "none":
        return 1
    devices = keras.distribution.list_devices()
    if config.batch_size % len(devices):
        raise ConfigError(f"batch_size {config.batch_size} must be divisible by the "
                          f"{len(devices)} devices of data_parallel")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


def git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str]:
    import keras

    versions = {"keras_backend": keras.backend.backend()}
    for lib in ("keras", "mlflow", "tensorflow", "jax", "torch", "numpy", "scikit-learn"):
        try:
            versions[f"{lib.replace('-', '_')}_version"] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model: no slow inference subprocess needed."""
    import keras

    libs = ["keras", {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        keras.backend.backend(), "tensorflow"), "numpy"]
    reqs = []
    for lib in libs:
        try:
            reqs.append(f"{lib}=={importlib.metadata.version(lib)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(lib)
    return reqs


def log_data(data: Dataset, config: Config) -> None:
    """Log the three splits as MLflow dataset inputs (each with its digest)."""
    import warnings

    import mlflow

    # a plain name such as "sklearn.datasets.load_digits" is no path: let MLflow record the code
    source = data.source if os.path.exists(data.source) else None
    for context, x, y in (("training", data.x_train, data.y_train),
                          ("validation", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "source ... in multiple ways"
            ds = mlflow.data.from_numpy(x, targets=y, source=source,
                                        name=f"{data.name}-{config.image_size}px-{context}")
        mlflow.log_input(ds, context=context)


def log_params_once(params: dict[str, Any]) -> None:
    """Log params to the active run, skipping those already logged with the same meaning.

    `mlflow run` logs the entry point's parameters itself (quoted, as typed); logging them
    again with another spelling would be refused as a change.
    """
    import mlflow

    run = mlflow.active_run()
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = param_text(value)
        if key not in existing:
            fresh[key] = text
        elif not same_param(existing[key], text):
            raise ValueError(f"param {key} was logged as {existing[key]!r}, now {text!r}")
    if fresh:
        mlflow.log_params(fresh)


def model_summary(model: Any) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), expand_nested=True,
                  line_length=120)
    return "\n".join(lines)


# --------------------------------------------------------------------------- train


def train(
    config: Config,
    data: Dataset | None = None,
    *,
    callbacks: Sequence[Any] = (),
    tags: dict[str, str] | None = None,
    resume_run_id: str | None = None,
) -> dict[str, Any]:
    """Train `config.model` on `config.dataset` inside an MLflow run; return its results.

    Runs nested under the active run when there is one (tuning trials, the study).
    `callbacks` are extra Keras callbacks (e.g. a pruner); `tags` are set on the run.
    `resume_run_id` continues that run from its last checkpoint (see `resume_config`).
    Returns run_id, best_epoch, epochs_run, val_accuracy (at the restored epoch),
    train_seconds, history and, when the test split is evaluated, the test metrics.
    A `StopRun` raised by a callback ends the run with its status and is re-raised;
    Ctrl-C or SIGTERM end it KILLED, resumable.
    """
    import keras
    import mlflow

    from tracking.batches import EpochBatches, full_batches
    from tracking.callbacks import EpochLogger, ResumableEarlyStopping, StopRun, Validation
    from tracking.checkpoints import CheckpointStore, download_best_weights, latest_checkpoint
    from tracking.recipes import RECIPES, make_optimizer, resolve
    from tracking.store import prepare_store

    prepare_store()
    requested = config = adopt_launched_run_experiment(config)
    config = resolve(config)
    recipe = RECIPES[config.model]
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if data is None:
        data = load_dataset(config.dataset, config.data_dir or None, config.image_size,
                            config.test_split, config.val_split, config.seed,
                            config.skip_bad_images, config.limit or None)
    timings["data_seconds"] = time.perf_counter() - t

    keras.utils.set_random_seed(config.seed)
    devices = use_distribution(config)
    steps_per_epoch = full_batches(len(data.y_train), config.batch_size)
    scratch = tempfile.mkdtemp(prefix="resume-")
    initial_epoch, history, stop_state, best_weights = 0, [], None, None
    if resume_run_id:
        found = latest_checkpoint(resume_run_id, scratch)
        if found is None:
            raise DataError(f"run {resume_run_id} has no complete checkpoint to resume from")
        model_path, state = found
        model = allow_jit(keras.saving.load_model(model_path))  # weights, optimizer, step
        initial_epoch, history = int(state["epochs_done"]), state["history"]
        stop_state = state.get("early_stopping")
        if state.get("best_file"):
            best_path = download_best_weights(resume_run_id, state["best_file"], scratch)
            if best_path is not None:
                best_model = build_classifier(config, data)
                best_model.load_weights(best_path)
                best_weights = best_model.get_weights()
        run = mlflow.start_run(run_id=resume_run_id)
        mlflow.set_tags({"resumed_from_epoch": str(initial_epoch), "stop_reason": ""})
    else:
        model = build_classifier(config, data)
        model.compile(
            optimizer=make_optimizer(recipe, config.learning_rate,
                                     steps_per_epoch * config.epochs),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        experiment_id = ensure_experiment(config.experiment)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=config.display_name,
                               nested=mlflow.active_run() is not None,
                               tags=run_tags(config, tags))
    run_id = run.info.run_id
    checkpoints = CheckpointStore(run_id, config.checkpoint_every)
    status = "FAILED"
    try:
        t = time.perf_counter()
        if not resume_run_id:
            log_params_once({
                **requested.to_params(),
                **{f"effective_{k}": param_text(getattr(config, k))
                   for k in ("epochs", "batch_size", "learning_rate", "augment")},
                "optimizer": recipe.optimizer,
                "weight_decay": recipe.weight_decay,
                "warmup_fraction": recipe.warmup_fraction,
                "augment_shift": recipe.shift if config.augment else 0.0,
                **{f"arch_{k}": v for k, v in recipe.model_options.items()},
                "num_params": model.count_params(),
                "num_devices": devices,
                "steps_per_epoch": steps_per_epoch,
                **library_versions(),
                "train_size": len(data.y_train), "val_size": len(data.y_val),
                "test_size": len(data.y_test), "num_classes": data.num_classes,
                "class_names": ",".join(data.class_names),
                "skipped_images": len(data.skipped),
                "data_source": data.source,
            })
            if data.skipped:
                mlflow.log_text("\n".join(data.skipped) + "\n", "skipped_images.txt")
            log_data(data, config)
            mlflow.log_text(model_summary(model), "model_summary.txt")
        else:
            relog_missing_epochs(run_id, history)
        timings["log_setup_seconds"] = time.perf_counter() - t

        stopper = ResumableEarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True, initial_state=stop_state,
                                         initial_best_weights=best_weights)
        batches = EpochBatches(data.x_train, data.y_train, config.batch_size, config.seed,
                               first_epoch=initial_epoch)
        validation = Validation(data.x_val, data.y_val)
        logger = EpochLogger(batches.images_per_epoch, stopper, checkpoints, history,
                             validation)
        t = time.perf_counter()
        if initial_epoch < config.epochs and not (stop_state and
                                                  stop_state["wait"] >= config.patience):
            model.fit(
                batches, epochs=config.epochs, initial_epoch=initial_epoch, shuffle=False,
                verbose=1 if sys.stdout.isatty() else 2,
                callbacks=[validation, stopper, logger, *callbacks],
            )
        elif best_weights is not None:
            model.set_weights(best_weights)
        timings["fit_seconds"] = time.perf_counter() - t
        try:
            logger.flush()
            results = finish_run(model, config, data, logger.history, stopper, run_id, timings)
        except Exception:
            if tracking_reachable():
                raise
            status = "OFFLINE"  # the server is away: keep everything on disk instead
            folder = save_offline(run_id, model, logger, stopper)
            print(f"error: the tracking server {mlflow.get_tracking_uri()} went away; the trained"
                  f" model and {len(logger.pending)} unsent metrics are in {folder}. When the "
                  f"server is back: python -m tracking.runs upload {folder}", file=sys.stderr)
            raise TrackingOffline(str(folder)) from None
        status = "FINISHED"
        checkpoints.drop_all()
        return results
    except StopRun as stop:
        status = stop.status
        mlflow.set_tags({"stop_reason": stop.reason,
                         **({"stop_epoch": str(stop.epoch)} if stop.epoch else {})})
        raise
    except KeyboardInterrupt as stop:
        status = "KILLED"
        why = str(stop) or "interrupted (Ctrl-C)"
        mlflow.set_tags({"stop_reason": why,
                         "resume_command": f"python -m tracking.train --resume {run_id}"})
        raise
    finally:
        checkpoints.close()
        shutil.rmtree(scratch, ignore_errors=True)
        if config.distribute != "none":
            keras.distribution.set_distribution(None)
        if status == "OFFLINE":
            _forget_active_run()
        else:
            mlflow.end_run(status=status)


class TrackingOffline(RuntimeError):
    """The tracking server went away; the run's results were saved to this folder."""


OFFLINE_ROOT = "mlflow-offline"


def tracking_reachable() -> bool:
    import mlflow

    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception:  # noqa: BLE001 - any failure means we cannot log
        return False
    return True


def save_offline(run_id: str, model: Any, logger: Any, stopper: Any) -> Path:
    """Write what the server could not take: the trained model and the unsent metrics."""
    import json

    from tracking.callbacks import best_epoch_of
    from tracking.checkpoints import atomic_save

    folder = Path(OFFLINE_ROOT) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(folder / "model.keras", model.save)
    state = {"run_id": run_id, "history": logger.history,
             "best_epoch": best_epoch_of(stopper, logger.history),
             "pending": [m.to_dictionary() for m in logger.pending]}
    atomic_save(folder / "state.json", lambda p: Path(p).write_text(json.dumps(state)))
    return folder


def _forget_active_run() -> None:
    """Drop the in-process active run without telling the (unreachable) server."""
    from mlflow.tracking import fluent

    try:
        fluent._active_run_stack.get().clear()
    except Exception:  # noqa: BLE001 - internals differ across versions; nothing to lose
        pass


def finish_run(model: Any, config: Config, data: Dataset, epochs: list[dict[str, float]],
               stopper: Any, run_id: str, timings: dict[str, float]) -> dict[str, Any]:
    """After training: summary metrics, curves, test evaluation and the logged model."""
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.models import infer_signature

    from tracking.batches import predict_padded
    from tracking.callbacks import best_epoch_of
    from tracking.evaluate import evaluate, log_evaluation
    from tracking.plots import training_curves_figure

    history = {k: [h.get(k, float("nan")) for h in epochs] for k in epochs[0]}
    best_epoch = best_epoch_of(stopper, epochs)
    train_seconds = float(sum(history["epoch_seconds"]))
    results: dict[str, Any] = {
        "run_id": run_id,
        "config": config,
        "best_epoch": best_epoch,
        "epochs_run": len(epochs),
        "val_accuracy": float(history["val_accuracy"][best_epoch - 1]),
        "val_loss": float(history["val_loss"][best_epoch - 1]),
        "train_seconds": train_seconds,
        "history": history,
    }
    mlflow.log_metrics({"best_epoch": best_epoch, "epochs_run": len(epochs),
                        "train_seconds": train_seconds,
                        "best_val_accuracy": results["val_accuracy"]})
    fig = training_curves_figure(history, best_epoch, title=config.display_name)
    mlflow.log_figure(fig, "training_curves.png")
    plt.close(fig)

    t = time.perf_counter()
    if config.evaluate_test:
        ev = evaluate(model, data.x_test, data.y_test, data.class_names)
        results.update(log_evaluation(ev, data.class_names, title=config.display_name))
        results["evaluation"] = ev
    timings["evaluate_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    sample = data.x_test[:2]
    signature = infer_signature(sample, predict_padded(model, sample).astype(np.float32))
    info = mlflow.keras.log_model(model, name="model", signature=signature,
                                  pip_requirements=model_requirements())
    results["model_uri"] = f"runs:/{run_id}/model"
    results["logged_model_uri"] = info.model_uri
    timings["log_model_seconds"] = time.perf_counter() - t
    results["timings"] = timings
    return results


def run_tags(config: Config, extra: dict[str, str] | None) -> dict[str, str]:
    tags = {"model": config.model, "dataset": config.dataset, "host": socket.gethostname(),
            "pid": str(os.getpid()), **(extra or {})}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def relog_missing_epochs(run_id: str, history: list[dict[str, float]]) -> None:
    """A process killed between its checkpoint and its metrics leaves a gap: fill it."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, "loss")}
    now = int(time.time() * 1000)
    missing = [Metric(k, v, now, step) for step, h in enumerate(history, start=1)
               if step not in logged for k, v in h.items() if math.isfinite(v)]
    if missing:
        client.log_batch(run_id, metrics=missing)


def resume_config(run_id: str) -> Config:
    """The Config a run was started with, read back from its params."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        raise ConfigError(f"cannot resume: no run {run_id!r} in {mlflow.get_tracking_uri()} "
                          f"({err.error_code})") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"cannot resume run {run_id}: it already finished")
    params = run.data.params
    values: dict[str, Any] = {}
    for f in fields(Config):
        if f.name not in params:
            continue
        text = params[f.name].strip("'\"")
        kind = str(f.type)  # e.g. "int | None"
        if text == "auto" and "None" in kind:
            values[f.name] = None
        elif "bool" in kind:
            values[f.name] = text.lower() == "true"
        elif "int" in kind:
            values[f.name] = int(text)
        elif "float" in kind:
            values[f.name] = float(text)
        else:
            values[f.name] = text
    return Config(**values)


# --------------------------------------------------------------------------- command line


def _bool_or_auto(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("", "auto", "none"):
        return None
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"augment must be true, false or auto, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    from models import MODELS
    from tracking.data import LOADERS

    d = Config()
    p = argparse.ArgumentParser(prog="python -m tracking.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, help=f"one of {', '.join(MODELS)}")
    p.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(LOADERS)}")
    p.add_argument("--data-dir", default=d.data_dir,
                   help="folder data set, or the folder holding Fashion-MNIST's IDX files")
    p.add_argument("--epochs", type=auto_or_number(int, "epochs"), default=d.epochs,
                   help="maximum epochs (default: the model's recipe)")
    p.add_argument("--batch-size", type=auto_or_number(int, "batch size"), default=d.batch_size,
                   help="default: the model's recipe")
    p.add_argument("--learning-rate", type=auto_or_number(float, "learning rate"),
                   default=d.learning_rate, help="peak learning rate (default: the recipe)")
    p.add_argument("--image-size", type=number(int, "image size"), default=d.image_size)
    p.add_argument("--patience", type=number(int, "patience"), default=d.patience,
                   help="early-stopping patience in epochs, on val_loss")
    p.add_argument("--seed", type=number(int, "seed"), default=d.seed)
    p.add_argument("--test-split", type=number(float, "test split"), default=d.test_split)
    p.add_argument("--val-split", type=number(float, "validation split"), default=d.val_split)
    p.add_argument("--augment", type=_bool_or_auto, default=d.augment,
                   help="true, false or auto (the recipe)")
    p.add_argument("--experiment", default=d.experiment)
    p.add_argument("--run-name", default=d.run_name)
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip (and count) unreadable images in a folder data set")
    p.add_argument("--limit", type=number(int, "limit"), default=d.limit,
                   help="keep at most this many training images (0 = all)")
    p.add_argument("--checkpoint-every", type=number(int, "checkpoint interval"),
                   default=d.checkpoint_every,
                   help="epochs between resumable checkpoints (0 = none)")
    p.add_argument("--distribute", default=d.distribute,
                   help="none or data_parallel (JAX: each batch split over all devices)")
    p.add_argument("--resume", default="", metavar="RUN_ID",
                   help="continue an interrupted run from its last checkpoint (its own settings)")
    return p


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("interrupted (SIGTERM)")


def _last_run_id() -> str:
    import mlflow

    run = mlflow.last_active_run()
    return run.info.run_id if run else "RUN_ID"


def check_tracking_server() -> None:
    """Fail fast, naming the URI, when the tracking server cannot be reached."""
    from tracking.server import TrackingServerError, check_tracking_uri

    try:
        check_tracking_uri()
    except TrackingServerError as err:
        raise ConfigError(str(err)) from None


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: bad input exits with status 2 before any MLflow run exists."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = args.resume.strip("'\" ")
    try:
        check_tracking_server()
        config = resume_config(resume) if resume else config_from_args(args)
        data = load_dataset(config.dataset, config.data_dir or None, config.image_size,
                            config.test_split, config.val_split, config.seed,
                            config.skip_bad_images, config.limit or None)
    except (ConfigError, DataError) as err:
        parser.error(str(err))
    from tracking.callbacks import StopRun

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        results = train(config, data, resume_run_id=resume or None)
    except StopRun as stop:
        print(f"error: run stopped: {stop.reason}", file=sys.stderr)
        return 1
    except TrackingOffline:
        return 75  # EX_TEMPFAIL: done, but not yet in the tracking store
    except KeyboardInterrupt as stop:
        run_id = resume or _last_run_id()
        print(f"{stop or 'interrupted'}: the run is marked KILLED; continue it with "
              f"python -m tracking.train --resume {run_id}", file=sys.stderr)
        return 143 if "SIGTERM" in str(stop) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = {k: results[k] for k in ("run_id", "best_epoch", "epochs_run") if k in results}
    if "test_accuracy" in results:
        summary["test_accuracy"] = round(results["test_accuracy"], 4)
    summary["train_seconds"] = round(results["train_seconds"], 1)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0




if __name__ == "__main__":
    sys.exit(main())
