"""What a tuning worker reports when it finishes: the study as it stands, the best trial's
model scored once on the test split (next to the baseline trial's), and the registry.

Into the worker's parent run: `trials_complete/pruned/fail/running/waiting`, the budget
spent (`trial_epochs`, `trial_seconds`: epochs trained and wall seconds over every trial and
seed), `trials.csv`, Optuna's optimisation plots, `best_*` params, `best_val_accuracy`, the tuned
model's test evaluation (`tuned_test_*`, with every figure and table a training run's evaluation
logs, and `class_names.json`: `tracking.evaluation.evaluate.log_evaluation`) and the baseline's
metrics (`baseline_test_*`); the best trial's model registered as `<model>-tuned` (a new version
only when the best trial changed). Without the final test (`final_test=False`, the fair
study: its final runs alone see the test split) the study is reported on validation only and
nothing is registered.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import matplotlib.pyplot as plt
import mlflow
import optuna
from mlflow.entities.model_registry import ModelVersion
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as vis

from models import model_label
from tracking.comparison.paired import chance_p_value
from tracking.data.dataset import Dataset, data_digest
from tracking.evaluation.class_names import log_class_names
from tracking.evaluation.evaluate import Evaluation, evaluate, evaluation_metrics, log_evaluation
from tracking.serving.pyfunc import load_logged_classifier
from tuning.storage import RUN_ID_ATTR

OBJECTIVE_METRIC = "val_accuracy"  # maximised; the pruning callback reports the same key per epoch
CHANCE_ALPHA = 0.05  # a best trial not better than chance at this level is not registered
MAX_TAG = 250
MODEL_URI_ATTR = "mlflow_model_uri"  # trial user attribute: the logged model (models:/...)
BASELINE_ATTR = "baseline"  # trial user attribute marking the enqueued reference setting
RUN_IDS_ATTR = "mlflow_run_ids"  # trial user attribute: the MLflow runs of its seeds
BUDGET_ATTRS = {"epochs": "trial_epochs", "seconds": "trial_seconds"}  # spent, per trial


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state (lower-case state names)."""
    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials)
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                          TrialState.RUNNING, TrialState.WAITING)}


def trial_run_ids(trial: FrozenTrial) -> list[str]:
    """The MLflow runs of a trial's seeds (one for a trial of one seed)."""
    ids = trial.user_attrs.get(RUN_IDS_ATTR) or [trial.user_attrs.get(RUN_ID_ATTR)]
    return [run_id for run_id in ids if run_id]


def budget(study: optuna.Study) -> dict[str, float]:
    """What the study spent over every trial and seed: `trial_epochs` (epochs trained) and
    `trial_seconds` (wall seconds of the trials' training runs, evaluation and logging
    included)."""
    trials = study.get_trials(deepcopy=False)
    return {attr: float(sum(t.user_attrs.get(attr, 0) for t in trials))
            for attr in BUDGET_ATTRS.values()}


def log_plots(study: optuna.Study) -> None:
    """Optimisation history, per-epoch curves and (from 2 complete trials) importances."""
    plots = {"optimization_history": vis.plot_optimization_history,
             "intermediate_values": vis.plot_intermediate_values}
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete >= 2:
        plots["param_importances"] = vis.plot_param_importances
    else:
        mlflow.set_tag("param_importances_skipped", f"{complete} complete trials, needs 2")
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                # a few similar trials: "importances will be equal" and "no artists with
                # labels", said of a figure a smoke study cannot do better with
                warnings.filterwarnings("ignore", message=".*importances will be equal")
                warnings.filterwarnings("ignore", message="No artists with labels")
                ax = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances of too uniform a study
            mlflow.set_tag(f"{name}_skipped", str(err).splitlines()[0][:250])
            continue
        fig = ax.figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        mlflow.log_figure(fig, f"{name}.png")
        plt.close(fig)


def evaluate_trial_model(run_id: str, data: Dataset) -> Evaluation:
    """Evaluation of the model logged by run `run_id` on the test split."""
    keras.backend.clear_session()
    model = load_logged_classifier(f"runs:/{run_id}/model")
    return evaluate(model, data.x_test, data.y_test, data.class_names)


def register_best(name: str, trial: FrozenTrial, tags: dict[str, str]) -> ModelVersion:
    """Register the trial's logged model as a version of `name`, unless it already is one."""
    run_id = trial.user_attrs[RUN_ID_ATTR]
    existing = mlflow.MlflowClient().search_model_versions(
        f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return existing[0]
    return mlflow.register_model(trial.user_attrs[MODEL_URI_ATTR], name, tags=tags)


def report_study(study: optuna.Study, model: str, study_name: str, data: Dataset, *,
                 final_test: bool = True) -> dict[str, Any]:
    """Log the study of `model` as it stands into the active (parent) run; return the summary:
    trials_<state> counts, trial_epochs and trial_seconds (`budget`) and, once a trial
    completed, best_trial, best_run_id, best_params, best_value and, with `final_test`,
    tuned_test_accuracy, baseline_test_accuracy and baseline_trial (when the baseline
    completed), chance_p_value, warning (when there is one, `tuning_verdict`) and
    registered_model (`name/version`, None when the best trial is not better than chance)."""
    summary: dict[str, Any] = {f"trials_{k}": v for k, v in counts(study).items()}
    summary.update(budget(study))
    summary["workers_seen"] = len({t.user_attrs["worker"] for t in study.trials
                                   if "worker" in t.user_attrs})
    mlflow.log_metrics(summary)
    mlflow.log_text(study.trials_dataframe().to_csv(index=False), "trials.csv")
    log_plots(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return summary
    best = study.best_trial
    best_run = best.user_attrs[RUN_ID_ATTR]
    summary.update(best_trial=best.number, best_run_id=best_run, best_params=best.params,
                   best_value=best.value)
    mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
    mlflow.log_metric(f"best_{OBJECTIVE_METRIC}", best.value)
    mlflow.set_tags({"best_trial_number": str(best.number), "best_run_id": best_run})
    if not final_test:
        mlflow.set_tag("registered_model", "none (no final test here)")
        summary["registered_model"] = None
        return summary

    tuned = evaluate_trial_model(best_run, data)
    title = f"{study_name} trial {best.number}"
    test = {"tuned_test_accuracy": tuned.accuracy}
    log_evaluation(tuned, data.class_names, title=title, prefix="tuned_test",
                   images=data.x_test, test_digest=data_digest(data.x_test, data.y_test))
    log_class_names(data.class_names)
    baseline = next((t for t in complete if t.user_attrs.get(BASELINE_ATTR)), None)
    if baseline is not None:
        ev = tuned if baseline.number == best.number else evaluate_trial_model(
            baseline.user_attrs[RUN_ID_ATTR], data)
        mlflow.log_metrics(evaluation_metrics(ev, prefix="baseline_test"))
        test["baseline_test_accuracy"] = ev.accuracy
        summary["baseline_trial"] = baseline.number
    summary.update(test)

    chance, warning = tuning_verdict(best, baseline, len(data.y_val), data.num_classes)
    summary["chance_p_value"] = chance
    if warning:
        summary["warning"] = warning
        mlflow.set_tag("tuning_warning", warning[:MAX_TAG])  # the summary prints it
    if chance >= CHANCE_ALPHA:
        summary["registered_model"] = None
        mlflow.set_tag("registered_model", "none (not better than chance)")
        return summary
    version = register_best(f"{model_label(model)}-tuned", best, {
        "study_name": study_name, "trial_number": str(best.number),
        OBJECTIVE_METRIC: f"{best.value:.4f}", "test_accuracy": f"{tuned.accuracy:.4f}"})
    summary["registered_model"] = f"{version.name}/{version.version}"
    mlflow.set_tag("registered_model", summary["registered_model"])
    return summary


def tuning_verdict(best: FrozenTrial, baseline: FrozenTrial | None, val_size: int,
                   num_classes: int) -> tuple[float, str]:
    """(p-value of the best trial's validation accuracy against chance, a warning or "").

    Chance is 1/num_classes; the p-value is SciPy's exact one-sided binomial test of the
    best trial's correct validation images out of `val_size`. At CHANCE_ALPHA or more the
    best trial is not shown to beat guessing and is not registered as tuned. A best trial that
    is the baseline itself is registered, with a warning that tuning found nothing better.
    """
    p_value = chance_p_value(round(best.value * val_size), val_size, num_classes)
    if p_value >= CHANCE_ALPHA:
        return p_value, (f"the best trial ({best.number}) reached {OBJECTIVE_METRIC} "
                         f"{best.value:.4f} on {val_size} images, not better than chance "
                         f"(1/{num_classes}; binomial test p = {p_value:.2g}): nothing was "
                         "registered; give the trials more epochs or data")
    if baseline is not None and baseline.number == best.number:
        return p_value, (f"no trial beat the baseline trial {baseline.number} "
                         f"({OBJECTIVE_METRIC} {best.value:.4f}): the registered model is the "
                         "untuned baseline; run more trials")
    return p_value, ""


def format_summary(s: dict[str, Any]) -> str:
    """The lines a worker prints when it ends (the summary of `run_tuning_study`)."""
    lines = [f"study {s['study_name']} ({s['storage']}): {s['trials_complete']} complete, "
             f"{s['trials_pruned']} pruned, {s['trials_fail']} failed "
             f"({s['trial_epochs']:.0f} trial-epochs, {s['trial_seconds']:.0f} s of "
             f"training); this worker ran {s['worker_trials']} in {s['study_seconds']:.0f} s; "
             f"parent run {s['parent_run_id']}"]
    if s.get("reclaimed_trials"):
        numbers = ", ".join(map(str, s["reclaimed_trials"]))
        lines.append(f"reclaimed trial{'s' if len(s['reclaimed_trials']) > 1 else ''} "
                     f"{numbers}: its worker's process on this host was gone; failed in Optuna, "
                     "its MLflow runs KILLED, and retried")
    if "best_trial" in s:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in s["best_params"].items())
        registered = (f"registered as {s['registered_model']}" if s["registered_model"]
                      else "registered nothing")
        lines.append(f"best trial {s['best_trial']}: {params}; {OBJECTIVE_METRIC} "
                     f"{s['best_value']:.4f}; {registered}")
        if "tuned_test_accuracy" in s:
            test = f"test accuracy: tuned {s['tuned_test_accuracy']:.4f}"
            if "baseline_test_accuracy" in s:
                test += (f", baseline (trial {s['baseline_trial']}) "
                         f"{s['baseline_test_accuracy']:.4f}")
            lines.append(test)
        if s.get("warning"):
            lines.append(f"warning: {s['warning']}")
    else:
        lines.append("no trial has completed yet: nothing to compare or register")
    return "\n".join(lines)
