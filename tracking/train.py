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
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tracking.config import Config, ConfigError, param_text, same_param
from tracking.data import DataError, Dataset, load_dataset

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# MLflow 3.17's UI opens an experiment on its GenAI (traces) view unless it is tagged so
EXPERIMENT_KIND = "custom_model_development"


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
    if config.augment:
        steps = [layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=config.seed,
                                          name="random_shift")]
        if config.dataset in FLIP_SAFE:
            steps.append(layers.RandomFlip("horizontal", seed=config.seed, name="random_flip"))
        x = keras.Sequential(steps, name="augment")(x)
    return keras.Model(inputs, core(x), name=config.model)


def ensure_experiment(name: str) -> str:
    """Id of experiment `name`, created (tagged to open on the runs table) if missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def adopt_launched_run_experiment(config: Config) -> Config:
    """Under `mlflow run` the run already exists (MLFLOW_RUN_ID): its experiment is the one."""
    import mlflow

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or mlflow.active_run() is not None:
        return config
    client = mlflow.MlflowClient()
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    return replace(config, experiment=experiment.name)


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
) -> dict[str, Any]:
    """Train `config.model` on `config.dataset` inside an MLflow run; return its results.

    Runs nested under the active run when there is one (tuning trials, the study).
    `callbacks` are extra Keras callbacks (e.g. a pruner); `tags` are set on the run.
    Returns run_id, best_epoch, epochs_run, val_accuracy (at the restored epoch),
    train_seconds, history and, when the test split is evaluated, the test metrics.
    A `StopRun` raised by a callback ends the run with its status and is re-raised.
    """
    import keras
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.models import infer_signature

    from tracking.callbacks import EpochLogger, StopOnNonFiniteLoss, StopRun, best_epoch_of
    from tracking.evaluate import evaluate, log_evaluation
    from tracking.plots import training_curves_figure
    from tracking.recipes import RECIPES, make_optimizer, resolve

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
    model = build_classifier(config, data)
    steps_per_epoch = math.ceil(len(data.y_train) / config.batch_size)
    model.compile(
        optimizer=make_optimizer(recipe, config.learning_rate, steps_per_epoch * config.epochs),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    experiment_id = ensure_experiment(config.experiment)
    run_tags = {"model": config.model, "dataset": config.dataset, **(tags or {})}
    commit = git_commit()
    if commit:
        run_tags["git_commit"] = commit
    run = mlflow.start_run(experiment_id=experiment_id, run_name=config.display_name,
                           nested=mlflow.active_run() is not None, tags=run_tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        t = time.perf_counter()
        log_params_once({
            **requested.to_params(),
            **{f"effective_{k}": param_text(getattr(config, k))
               for k in ("epochs", "batch_size", "learning_rate", "augment")},
            "optimizer": recipe.optimizer,
            "weight_decay": recipe.weight_decay,
            "warmup_fraction": recipe.warmup_fraction,
            **{f"arch_{k}": v for k, v in recipe.model_options.items()},
            "num_params": model.count_params(),
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
        timings["log_setup_seconds"] = time.perf_counter() - t

        logger = EpochLogger(len(data.y_train))
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                                restore_best_weights=True)
        t = time.perf_counter()
        model.fit(
            data.x_train, data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=config.epochs, batch_size=config.batch_size, shuffle=True,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[logger, StopOnNonFiniteLoss(), *callbacks, stopper],
        )
        train_seconds = time.perf_counter() - t
        history = {k: [h[k] for h in logger.history] for k in logger.history[0]}
        best_epoch = best_epoch_of(stopper, logger.history)
        results: dict[str, Any] = {
            "run_id": run_id,
            "config": config,
            "best_epoch": best_epoch,
            "epochs_run": len(logger.history),
            "val_accuracy": float(history["val_accuracy"][best_epoch - 1]),
            "val_loss": float(history["val_loss"][best_epoch - 1]),
            "train_seconds": train_seconds,
            "history": history,
        }
        mlflow.log_metrics({k: results[k] for k in
                            ("best_epoch", "epochs_run", "train_seconds")}
                           | {"best_val_accuracy": results["val_accuracy"]})
        fig = training_curves_figure(history, best_epoch, title=config.display_name)
        mlflow.log_figure(fig, "training_curves.png")
        plt.close(fig)
        timings["fit_seconds"] = train_seconds

        t = time.perf_counter()
        if config.evaluate_test:
            ev = evaluate(model, data.x_test, data.y_test, data.class_names)
            results.update(log_evaluation(ev, data.class_names, title=config.display_name))
            results["evaluation"] = ev
        timings["evaluate_seconds"] = time.perf_counter() - t

        t = time.perf_counter()
        sample = data.x_test[:2]
        signature = infer_signature(sample, np.asarray(model.predict(sample, verbose=0)))
        info = mlflow.keras.log_model(model, name="model", signature=signature,
                                      pip_requirements=model_requirements())
        results["model_uri"] = f"runs:/{run_id}/model"
        results["logged_model_uri"] = info.model_uri
        timings["log_model_seconds"] = time.perf_counter() - t
        results["timings"] = timings
        status = "FINISHED"
        return results
    except StopRun as stop:
        status = stop.status
        mlflow.set_tags({"stop_reason": stop.reason,
                         **({"stop_epoch": str(stop.epoch)} if stop.epoch else {})})
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        mlflow.set_tag("stop_reason", "interrupted by the user")
        raise
    finally:
        mlflow.end_run(status=status)
        if mlflow.active_run() is not None and mlflow.active_run().info.run_id == run_id:
            mlflow.end_run(status=status)


# --------------------------------------------------------------------------- command line


def _auto_or(kind: type, name: str):
    def parse(text: str) -> Any:
        if text.strip().lower() in ("", "auto", "none"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'} or 'auto', "
                f"got {text!r}") from None
    return parse


def _number(kind: type, name: str):
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
    return parse


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
    p.add_argument("--epochs", type=_auto_or(int, "epochs"), default=d.epochs,
                   help="maximum epochs (default: the model's recipe)")
    p.add_argument("--batch-size", type=_auto_or(int, "batch size"), default=d.batch_size,
                   help="default: the model's recipe")
    p.add_argument("--learning-rate", type=_auto_or(float, "learning rate"),
                   default=d.learning_rate, help="peak learning rate (default: the recipe)")
    p.add_argument("--image-size", type=_number(int, "image size"), default=d.image_size)
    p.add_argument("--patience", type=_number(int, "patience"), default=d.patience,
                   help="early-stopping patience in epochs, on val_loss")
    p.add_argument("--seed", type=_number(int, "seed"), default=d.seed)
    p.add_argument("--test-split", type=_number(float, "test split"), default=d.test_split)
    p.add_argument("--val-split", type=_number(float, "validation split"), default=d.val_split)
    p.add_argument("--augment", type=_bool_or_auto, default=d.augment,
                   help="true, false or auto (the recipe)")
    p.add_argument("--experiment", default=d.experiment)
    p.add_argument("--run-name", default=d.run_name)
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip (and count) unreadable images in a folder data set")
    p.add_argument("--limit", type=_number(int, "limit"), default=d.limit,
                   help="keep at most this many training images (0 = all)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: bad input exits with status 2 before any MLflow run exists."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        data = load_dataset(config.dataset, config.data_dir or None, config.image_size,
                            config.test_split, config.val_split, config.seed,
                            config.skip_bad_images, config.limit or None)
    except (ConfigError, DataError) as err:
        parser.error(str(err))
    from tracking.callbacks import StopRun

    try:
        results = train(config, data)
    except StopRun as stop:
        print(f"error: run stopped: {stop.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the run is marked KILLED", file=sys.stderr)
        return 130
    summary = {k: results[k] for k in ("run_id", "best_epoch", "epochs_run") if k in results}
    if "test_accuracy" in results:
        summary["test_accuracy"] = round(results["test_accuracy"], 4)
    summary["train_seconds"] = round(results["train_seconds"], 1)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0




if __name__ == "__main__":
    sys.exit(main())
