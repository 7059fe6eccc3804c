"""After training: the summary metrics, the training curves, the test evaluation and the
logged model, for the active run. Training calls it, and so does the upload of a run that
finished while the tracking server was away (`tracking.training.offline`).
"""

from __future__ import annotations

import time
from typing import Any

import keras
import matplotlib.pyplot as plt
import mlflow

from tracking.config import Config
from tracking.data.dataset import Dataset, data_digest
from tracking.evaluation.evaluate import evaluate, log_evaluation
from tracking.evaluation.plots import training_curves_figure
from tracking.serving.pyfunc import MODEL_NAME, fail_pending_models, log_classifier


def finish_run(model: keras.Model, config: Config, data: Dataset,
               epochs: list[dict[str, float]], best_epoch: int, run_id: str,
               timings: dict[str, float], again: bool = False) -> dict[str, Any]:
    """Log what a trained run ends with and return its results.

    `epochs` is the per-epoch history (one dict of metrics per epoch), `best_epoch` the 1-based
    epoch whose weights `model` holds. Logs `best_epoch`, `epochs_run`, `train_seconds`,
    `best_val_accuracy`, `training_curves.png`, the test evaluation (when
    `config.evaluate_test`: `tracking.evaluation.evaluate.log_evaluation`) and the model (uint8
    images in, probabilities out; its metadata holds `class_names`, in label order). Returns
    run_id, config, best_epoch, epochs_run, val_accuracy and val_loss (at the best epoch),
    train_seconds, history ({metric: [per epoch]}), model_uri, logged_model_uri, timings
    (`timings` plus evaluate_seconds and log_model_seconds) and, with a test evaluation, the
    test metrics and `evaluation`. `again` (a resumed or uploaded run, whose earlier process
    may have been stopped in this very phase): summary and test metrics it already holds are
    not logged twice, and a logged model it left PENDING is marked FAILED.
    """
    history = {k: [h.get(k, float("nan")) for h in epochs] for k in epochs[0]}
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
    logged: set[str] = set()
    if again:
        logged = set(mlflow.MlflowClient().get_run(run_id).data.metrics)
        fail_pending_models(run_id)
    summary = {"best_epoch": best_epoch, "epochs_run": len(epochs),
               "train_seconds": train_seconds, "best_val_accuracy": results["val_accuracy"]}
    mlflow.log_metrics({k: v for k, v in summary.items() if k not in logged})
    fig = training_curves_figure(history, best_epoch, title=config.display_name)
    mlflow.log_figure(fig, "training_curves.png")
    plt.close(fig)

    t = time.perf_counter()
    if config.evaluate_test:
        ev = evaluate(model, data.x_test, data.y_test, data.class_names)
        results.update(log_evaluation(ev, data.class_names, title=config.display_name,
                                      images=data.x_test,
                                      test_digest=data_digest(data.x_test, data.y_test),
                                      skip=logged))
        results["evaluation"] = ev
    timings["evaluate_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    info = log_classifier(model, data.x_test[:2],
                          metadata={"class_names": list(data.class_names)})
    results["model_uri"] = f"runs:/{run_id}/{MODEL_NAME}"
    results["logged_model_uri"] = info.model_uri
    timings["log_model_seconds"] = time.perf_counter() - t
    results["timings"] = timings
    return results
