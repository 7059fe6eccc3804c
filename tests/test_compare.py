"""The comparison report, from runs logged to a real MLflow store.

The runs here are logged the way `tracking.train` logs them (same keys, the confusion matrix
written by `tracking.evaluation.evaluate.log_evaluation`) but with chosen accuracies, so the
report's verdicts can be checked exactly. tests/test_study.py covers the path from real training.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from processes import free_port

from tracking import compare
from tracking.comparison.figures import FIGURES
from tracking.comparison.groups import TUNED, VARIANT_TAG, ModelGroup, RunSummary
from tracking.comparison.report import build_report, render_markdown
from tracking.comparison.selection import CompareError
from tracking.comparison.verdicts import class_error_sentence, gap_verdict, shared_mistakes
from tracking.data.dataset import data_digest
from tracking.evaluation.evaluate import evaluation_from_probabilities, log_evaluation
from tracking.evaluation.outcomes import predictions_frame
from tracking.store.connect import TrackingServerError, check_tracking_uri

REPO = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]
PER_CLASS = 20  # test images per class
# the fake test split's images: image i is filled with the value i % 256, so a gallery's
# pictures can be traced back to their test index
TEST_IMAGES = np.repeat(np.arange(10 * PER_CLASS, dtype=np.uint8), 8 * 8 * 3).reshape(
    10 * PER_CLASS, 8, 8, 3)


def log_fake_training_run(experiment: str, model: str, seed: int, accuracy: float, *,
                          dataset: str = "digits", hard: int = 7, confused_with: int = 1,
                          status: str = "FINISHED", tags: dict[str, str] | None = None,
                          artifacts: bool = True, params: dict[str, object] | None = None,
                          split: int = 0) -> str:
    """A run shaped like tracking.train's: params, per-epoch curves, test metrics, confusion
    matrix. Errors go to class `hard` (taken for `confused_with`) first, then spread."""
    from tracking.store.connect import ensure_experiment

    y = np.repeat(np.arange(10), PER_CLASS)
    pred = y.copy()
    wrong = round((1 - accuracy) * len(y))
    hard_idx = np.flatnonzero(y == hard)[: min(wrong, PER_CLASS // 2)]
    pred[hard_idx] = confused_with
    rest = [i for i in range(len(y)) if y[i] != hard][: wrong - len(hard_idx)]
    pred[rest] = (y[rest] + 1) % 10
    probs = np.full((len(y), 10), 0.08 / 9)
    probs[np.arange(len(y)), pred] = 0.92
    ev = evaluation_from_probabilities(probs, y, CLASSES)
    with mlflow.start_run(experiment_id=ensure_experiment(experiment),
                          run_name=f"{model}-{dataset}-seed{seed}",
                          tags={"model": model, "dataset": dataset, **(tags or {})}) as run:
        mlflow.log_params({"model": model, "dataset": dataset, "seed": seed,
                           "class_names": ",".join(CLASSES), "num_params": 1000 + seed,
                           **(params or {})})
        for epoch in (1, 2, 3):
            mlflow.log_metrics({"val_accuracy": accuracy * epoch / 3, "val_loss": 1.0 / epoch,
                                "train_images_per_second": 100.0 * epoch}, step=epoch)
        mlflow.log_metrics({"best_epoch": 3, "epochs_run": 3, "train_seconds": 12.0})
        if artifacts:
            log_evaluation(ev, CLASSES, title=model, images=TEST_IMAGES,  # `split`: another
                           test_digest=data_digest(TEST_IMAGES + split, y))  # test split's
        else:
            mlflow.log_metric("test_accuracy", accuracy)
        mlflow.set_tag("mlflow.runName", f"{model}-{dataset}-seed{seed}")
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def summary(model: str, accuracies: list[float], confusion: np.ndarray | None = None,
            predictions: list[pd.DataFrame] | None = None) -> ModelGroup:
    runs = [RunSummary(run_id=f"{model}{i}", experiment_id="0", run_name="", model=model,
                       dataset="digits", seed=str(i), test_accuracy=a, f1_macro=None,
                       best_epoch=None, epochs_run=None, train_seconds=None,
                       images_per_second=None, num_params=None, class_names=CLASSES,
                       confusion=confusion,
                       predictions=predictions[i] if predictions else None)
            for i, a in enumerate(accuracies)]
    return ModelGroup("digits", model, runs)


def test_classes_are_ranked_by_the_share_missed_and_the_count_said() -> None:
    cm = np.diag([30, 4, 10, 10, 10, 10, 10, 10, 10, 10])
    cm[0, 0], cm[0, 5] = 27, 3  # class 0: 3 of 30 missed (10%)
    cm[1, 1], cm[1, 2] = 2, 2  # class 1: 2 of 4 (50%)
    cm[2, 2], cm[2, 3] = 9, 1  # classes 2 and 3: 1 of 10 each (10%): tied with class 0
    cm[3, 3], cm[3, 4] = 9, 1
    sentence = class_error_sentence(summary("m", [0.9], confusion=cm))
    assert sentence.index("`1` (2 of 4 missed, 50%") < sentence.index("`0` (3 of 30 missed, 10%")
    assert "`2` (1 of 10 missed, 10%" in sentence  # the tie after 0 goes to the lower label
    assert "`3` (" not in sentence  # three classes named


def test_images_every_model_gets_wrong_need_a_shared_split() -> None:
    def frame(predicted: list[int], digest: str) -> pd.DataFrame:
        probs = np.full((4, 10), 0.01)
        probs[np.arange(4), predicted] = 0.91
        return predictions_frame(probs, np.array([0, 1, 2, 3]), digest)

    a = summary("a", [0.5, 0.5], predictions=[frame([0, 9, 9, 3], "s0"),
                                              frame([0, 9, 2, 3], "s1")])
    b = summary("b", [0.5, 0.5], predictions=[frame([0, 8, 2, 8], "s0"),
                                              frame([5, 1, 2, 3], "s1")])
    shared = {s.test_digest: s for s in shared_mistakes([a, b])}
    assert shared["s0"].indices == [1] and shared["s0"].predicted == {"a": [9], "b": [8]}
    assert shared["s1"].indices == [] and len(shared["s1"].runs) == 2
    c = summary("c", [0.5], predictions=[frame([0, 1, 2, 3], "other")])
    assert shared_mistakes([a, c]) == []  # c's split is nobody else's
    md = render_markdown([a, c], [], [], experiment="e", selection="s", ui_base="http://x")
    # c was scored on other test images: left out of the ranking, with that reason
    assert "- c (" in md and "other test split: scored on other test images" in md


def test_gap_verdicts_follow_the_spread_rule() -> None:
    apart = gap_verdict(summary("a", [0.95, 0.96, 0.97]), summary("b", [0.80, 0.82, 0.81]))
    assert "more than the spread" in apart and "Welch" in apart
    close = gap_verdict(summary("a", [0.95, 0.97, 0.96]), summary("c", [0.955, 0.945, 0.95]))
    assert "within the spread" in close and "do not separate" in close
    unsure = gap_verdict(summary("a", [0.9833] * 3), summary("r", [0.9556, 0.9667, 0.9778]))
    assert "more than the spread" in unsure and "not significant at 5%" in unsure
    single = gap_verdict(summary("a", [0.99]), summary("b", [0.90, 0.91]))
    assert "single run" in single and "may be noise" in single


def test_report_with_seeds_judges_gaps_and_names_hard_classes(mlflow_uri: str,
                                                              tmp_path: Path) -> None:
    accuracies = {"vgg19": [0.95, 0.96, 0.97], "concat_cnn": [0.955, 0.945, 0.95],
                  "resnet50": [0.80, 0.82, 0.81]}
    ids = {m: [log_fake_training_run("cmp", m, s, a) for s, a in enumerate(accs)]
           for m, accs in accuracies.items()}
    # never compared: an unfinished run, a tuning trial, another data set
    log_fake_training_run("cmp", "vgg19", 9, 0.1, status="FAILED", artifacts=False)
    log_fake_training_run("cmp", "vgg19", 8, 0.1, tags={"trial_number": "3"}, artifacts=False)
    log_fake_training_run("cmp", "vgg19", 7, 0.1, dataset="mnist", artifacts=False)

    out = tmp_path / "report"
    assert compare.main(["--experiment", "cmp", "--filter", "params.dataset = 'digits'",
                         "--output", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    for name in FIGURES:
        assert f"![{name}]({name})" in md
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    assert "| 1 | vgg19 | digits | 3 | 0.9600 ± 0.0100 |" in md
    assert "| 2 | concat_cnn | digits | 3 | 0.9500 ± 0.0050 |" in md
    assert "| 3 | resnet50 | digits | 3 | 0.8100 ± 0.0100 |" in md
    assert "0.1000" not in md and "mnist" not in md
    for run_ids in ids.values():
        for run_id in run_ids:
            assert f"[{run_id[:8]}](" in md and run_id in md
    verdicts = [line for line in md.splitlines() if line.startswith("- **")
                and " over " in line]
    assert "**vgg19** over **concat_cnn**" in verdicts[0]
    assert "within the spread" in verdicts[0]
    assert "**concat_cnn** over **resnet50**" in verdicts[1]
    assert "more than the spread" in verdicts[1]
    assert "single run" not in md
    # vgg19's misses are in class 7, taken for 1 (the per-class view, from the logged CSVs)
    assert "**vgg19** gets `7` (" in md and "mostly taken for `1`" in md
    assert "Among the most-missed classes of every model: `7`." in md
    # the same split for every run here: 6 images (class 7's first) every run gets wrong
    assert f"Test images every model gets wrong: 6 of 200 on split " \
           f"`{data_digest(TEST_IMAGES, np.repeat(np.arange(10), PER_CLASS))}` (9 runs), " \
           "pictured in `common_mistakes_digits.png`." in md
    assert (out / "common_mistakes_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Model | ROC AUC (macro) | Average precision (macro) | Top-2 accuracy | " \
           "Top-5 accuracy | ECE | Brier score |" in md
    assert "| resnet50 | " in md and "0.1100 ± 0.0100 |" in md  # ECE: |0.81 - 0.92|
    assert "Best epoch / epochs run" in md and "3 / 3, 3 / 3, 3 / 3" in md
    assert "| 250 |" in md  # images/s: mean of epochs 2 and 3

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("cmp")
    reports = client.search_runs([exp.experiment_id], "tags.run_kind = 'comparison'")
    assert len(reports) == 1
    report = reports[0]
    artifacts = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"comparison.md", *FIGURES} <= artifacts
    assert report.data.metrics["mean_test_accuracy.vgg19"] == pytest.approx(0.96)
    assert report.data.metrics["sd_test_accuracy.resnet50"] == pytest.approx(0.01)
    assert exp.tags["mlflow.sharedViewState.key-metrics"]

    # a second report does not count the first one
    assert compare.main(["--experiment", "cmp", "--filter", "params.dataset = 'digits'",
                         "--output", str(tmp_path / "again")]) == 0
    assert "9 finished training runs" in (tmp_path / "again" / "comparison.md").read_text()


def test_default_takes_the_latest_run_of_each_model(mlflow_uri: str, tmp_path: Path,
                                                    capsys) -> None:
    old = log_fake_training_run("latest", "vgg19", 0, 0.5)
    time.sleep(0.01)
    new = log_fake_training_run("latest", "vgg19", 0, 0.9)
    other = log_fake_training_run("latest", "resnet50", 0, 0.85)
    assert compare.main(["--experiment", "latest", "--output", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "comparison.md").read_text()
    assert new in md and other in md and old not in md
    assert "0.9000 (single run)" in md and "0.8500 (single run)" in md
    assert "the seed-to-seed spread is unknown" in md
    assert "one run per model is what the original study drew its ranking from" in md
    assert "# Model comparison: latest" in capsys.readouterr().out


def test_a_report_over_every_experiment_names_the_one_its_runs_are_in(
        mlflow_uri: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --experiment searches every experiment; when every compared run is in one, the
    title names it, and says `all experiments` only when they are spread over several."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # a second experiment, without training runs (not mlflow.set_experiment: it exports
    # MLFLOW_EXPERIMENT_ID to every later subprocess of this test process)
    mlflow.MlflowClient().create_experiment("empty-one")
    log_fake_training_run("solo", "vgg19", 0, 0.9)
    log_fake_training_run("solo", "resnet50", 0, 0.8)
    assert compare.main(["--output", str(tmp_path / "r"), "--no-log", "--no-latency"]) == 0
    md = (tmp_path / "r" / "comparison.md").read_text()
    assert md.startswith("# Model comparison: solo\n")
    capsys.readouterr()

    log_fake_training_run("elsewhere", "concat_cnn", 0, 0.7)
    assert compare.main(["--output", str(tmp_path / "s"), "--no-log", "--no-latency"]) == 0
    md = (tmp_path / "s" / "comparison.md").read_text()
    assert md.startswith("# Model comparison: all experiments\n")
    # the Python API without a title: the experiment's name, not its id
    exp = mlflow.get_experiment_by_name("solo").experiment_id
    assert build_report([exp], tmp_path / "t", latency=False).markdown.startswith(
        "# Model comparison: solo\n")


def test_default_leaves_fair_study_runs_to_their_own_report(mlflow_uri: str,
                                                           tmp_path: Path) -> None:
    """A fair study's tuned runs are not ranked against runs trained apart; a data set only
    a fair study trained on shows the study's runs."""
    plain = log_fake_training_run("mixed", "vgg19", 0, 0.95)
    tuned = log_fake_training_run("mixed", "concat_cnn", 0, 0.9, tags={VARIANT_TAG: TUNED})
    only_study = log_fake_training_run("mixed", "concat_cnn", 0, 0.8, dataset="fashion_mnist",
                                       tags={VARIANT_TAG: TUNED})
    assert compare.main(["--experiment", "mixed", "--output", str(tmp_path / "r"),
                         "--no-log", "--no-latency"]) == 0
    md = (tmp_path / "r" / "comparison.md").read_text()
    assert plain in md and only_study in md and tuned not in md
    assert "1. **vgg19** 0.9500 (single run)" in md
    assert "1. **concat_cnn (tuned)** 0.8000 (single run)" in md


def test_report_links_only_the_figures_it_wrote(mlflow_uri: str, tmp_path: Path) -> None:
    """Runs without a logged confusion matrix: no confusion_matrices.png, and no link to it."""
    log_fake_training_run("bare", "vgg19", 0, 0.9, artifacts=False)
    log_fake_training_run("bare", "resnet50", 0, 0.8, artifacts=False)
    assert compare.main(["--experiment", "bare", "--output", str(tmp_path / "r"),
                         "--no-log"]) == 0
    md = (tmp_path / "r" / "comparison.md").read_text()
    assert not (tmp_path / "r" / "confusion_matrices.png").exists()
    assert "confusion_matrices.png" not in md
    assert "![accuracy_by_model.png](accuracy_by_model.png)" in md


def test_nothing_to_compare_exits_2(mlflow_uri: str, tmp_path: Path, capsys) -> None:
    from tracking.store.connect import ensure_experiment

    ensure_experiment("empty")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit_info:  # checked before any run is read
        compare.main(["--experiment", "empty", "--output", str(tmp_path / "a-file")])
    assert exit_info.value.code == 2
    assert "--output: not a folder that can be written" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--parent", "nosuchrun", "--output", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert "--parent: no run 'nosuchrun' in " in capsys.readouterr().err
    for argv in (["--experiment", "empty"], ["--experiment", "no-such-experiment"]):
        with pytest.raises(SystemExit) as exit_info:
            compare.main([*argv, "--output", str(tmp_path / "r")])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no finished training runs" in err and "no experiment named 'no-such-experiment'" in err
    with pytest.raises(CompareError):
        build_report([ensure_experiment("empty")], tmp_path / "r")
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_unreachable_server_fails_in_seconds(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # the user's own choice stays
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingServerError, match=f"{uri} is not reachable"):
        check_tracking_uri(uri)
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(SystemExit) as exit_info:
            compare.main(["--experiment", "x"])
    finally:
        mlflow.set_tracking_uri(None)
    assert exit_info.value.code == 2
    assert f"MLflow tracking server {uri} is not reachable" in capsys.readouterr().err
    assert time.monotonic() - start < 15


def test_mlproject_compare_and_study_entries_match_their_commands() -> None:
    from tracking.study import StudyConfig, build_parser

    spec = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    for entry in ("compare", "study"):
        for name in spec[entry]["parameters"]:
            assert "{" + name + "}" in spec[entry]["command"], (entry, name)
    study = spec["study"]["parameters"]
    defaults = StudyConfig()
    assert study["seeds"]["default"] == defaults.seeds
    assert study["models"]["default"] == ",".join(defaults.models)
    assert study["dataset"]["default"] == defaults.dataset
    args = build_parser().parse_args(["--tune", "true", "--seeds", "2", "--epochs", "auto"])
    assert args.tune is True and args.seeds == 2 and args.epochs is None
    assert build_parser().parse_args(["--tune-budget", "''"]).tune_budget is None  # MLproject's
    args = build_parser().parse_args(["--tune-budget", "6x8", "--promote", "false"])
    assert args.tune_budget == (6, 8) and args.promote is False
    for name in ("tune_budget", "pruner", "seeds_per_trial", "split_seed"):
        flag = name.replace("_", "-")
        assert study[name]["default"] == getattr(build_parser().parse_args([]), name) or (
            name == "tune_budget" and study[name]["default"] == ""), name
        assert f"--{flag} {{{name}}}" in spec["study"]["command"], name


def test_a_fair_study_sets_each_model_tuned_against_its_recipe(mlflow_uri: str,
                                                             tmp_path: Path) -> None:
    from tracking.store.connect import ensure_experiment

    for model, recipe, tuned in (("a", 0.90, 0.95), ("b", 0.85, 0.85)):
        log_fake_training_run("fair", model, 1, recipe, tags={"study_variant": "recipe"})
        log_fake_training_run("fair", model, 1, tuned, tags={"study_variant": "tuned"})
        with mlflow.start_run(experiment_id=ensure_experiment("fair"),
                              tags={"run_kind": "tuning", "study_name": f"{model}-study"}):
            mlflow.log_params({"model": model, "dataset": "digits", "n_trials": 4,
                               "max_epochs": 3, "pruner": "MedianPruner",
                               "seeds_per_trial": 1, "seed": 0, "best_epochs": 3})
            mlflow.log_metrics({"trials_complete": 3, "trials_pruned": 1, "trial_epochs": 10,
                                "trial_seconds": 42.0})
    out = tmp_path / "r"
    assert compare.main(["--experiment", "fair", "--output", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    # the tuned models are ranked; the recipes are their references
    assert "| 1 | a (tuned) | digits | 1 | 0.9500 (single run) |" in md
    assert "| 2 | b (tuned) | digits | 1 | 0.8500 (single run) |" in md
    assert "| – | a (recipe) | digits | 1 | 0.9000 (single run) |" in md
    # every pair on the same images: a (tuned) gets 20 images right that b (tuned) misses
    # (class 0's, class 7's first ten), and none the other way: McNemar p = 2 / 2**20
    p = f"{2 / 2**20:.2g}"
    assert "| a (tuned) − b (tuned) | 1 + 1, 200 | +10.00 | " in md
    assert f"| McNemar exact (20 vs 0 discordant) | {p} | {p} | **separated** |" in md
    assert "Holm's correction over 1 pair." in md
    # recipe against tuned: a gains 10 images (p = 2 / 2**10), b none (p = 1); Holm: x2, x1
    assert "### Recipe against tuned" in md
    recipe_rows = {line.split(" | ")[0]: line for line in md.splitlines()
                   if line.startswith(("| a | 0.9000", "| b | 0.8500"))}
    assert recipe_rows["| a"].startswith("| a | 0.9000 (single run) | 0.9500 (single run) | "
                                         "5.00 | ")
    assert f"| {2 * 2 / 2**10:.2g} | 3 / 1 | 10 | 42 | epochs 3 |" in recipe_rows["| a"]
    assert "| 0.00 | +0.00 to +0.00 | 1 | 3 / 1 |" in recipe_rows["| b"]
    # accuracy against cost: no logged model, so no latency; a (tuned) is as small and fast
    assert "| a (tuned) | 0.9500 (single run) | 1,001 | 12 | – | – | no (front) |" in md
    assert "| b (tuned) | 0.8500 (single run) | 1,001 | 12 | – | – | **dominated** by " \
           "a (tuned) |" in md
    assert "not measured (--no-latency, or no run's model could be loaded)" in md
    assert (out / "accuracy_vs_cost_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Every model had the same budget: 4 trials (complete + pruned) of at most 3 " \
           "epochs, MedianPruner, 1 seed per trial from seed 0" in md
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("fair")
    (report,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'comparison'")
    metrics = report.data.metrics
    assert metrics["mean_test_accuracy.a.tuned"] == pytest.approx(0.95)
    assert metrics["mean_test_accuracy.a.recipe"] == pytest.approx(0.90)
    assert metrics["tuning_gap.a"] == pytest.approx(0.05)
    assert (metrics["rank.a"], metrics["rank.b"]) == (1, 2)


# ------------------------------------------------------------------ like with like (issue 23)


def test_a_smoke_run_is_left_out_of_the_ranking_with_its_reason(mlflow_uri: str,
                                                                 tmp_path: Path) -> None:
    """The Quick start's full run and a `--limit 200` smoke run: never ranked together."""
    full = log_fake_training_run("mixed", "vgg19", 0, 0.96)
    smoke = log_fake_training_run("mixed", "concat_cnn", 0, 0.20, params={"limit": 200})
    cut = log_fake_training_run("mixed", "resnet50", 0, 0.30, params={"effective_epochs": 2})
    exp = mlflow.get_experiment_by_name("mixed").experiment_id
    md = build_report([exp], tmp_path / "r", latency=False).markdown
    ranking = md[md.index("### Ranking"):md.index("Left out of this ranking")]
    assert "vgg19" in ranking and "concat_cnn" not in ranking and "resnet50" not in ranking
    assert f"concat_cnn [limit 200] ([{smoke[:8]}]" in md
    assert "smoke run: limit 200, the ranked runs' full budget" in md
    assert f"resnet50 [2 epochs] ([{cut[:8]}]" in md and "smoke run: 2 epochs" in md
    assert "points" not in ranking  # no gap verdict against a smoke run
    assert full[:8] in md

    both = build_report([exp], tmp_path / "s", latency=False, include_smoke=True).markdown
    ranking = both[both.index("### Ranking"):both.index("### Paired")]
    assert "concat_cnn [limit 200]" in ranking and "vgg19" in ranking


def test_two_folders_and_two_image_sizes_are_separate_sections(mlflow_uri: str,
                                                                tmp_path: Path) -> None:
    """Three runs that all count as data set `folder`: two folders (the same class names)
    and two image sizes. Each is a section of its own; nothing is pooled or ranked across."""
    for model, source, size, acc in (("a", "/data/cats", 32, 0.9), ("a", "/data/dogs", 32, 0.6),
                                     ("a", "/data/cats", 48, 0.8)):
        log_fake_training_run("folders", model, 0, acc, dataset="folder",
                              params={"data_source": source, "image_size": size})
    exp = mlflow.get_experiment_by_name("folders").experiment_id
    report = build_report([exp], tmp_path / "r", latency=False)
    assert sorted(g.dataset for g in report.groups) == [
        "folder-cats-32px", "folder-cats-48px", "folder-dogs-32px"]
    assert all(g.n == 1 for g in report.groups)  # one run each: no "over seeds" pooling
    md = report.markdown
    assert md.count("\n## folder-") == 3
    assert "Data: folder-dogs-32px `/data/dogs` (10 classes" in md
    assert "0.7667" not in md  # the three accuracies' mean appears nowhere
    # the registry and the study key on the same identity: two folders, two names
    assert len({g.dataset for g in report.groups}) == 3


def test_a_run_on_another_test_split_is_left_out_with_that_reason(mlflow_uri: str,
                                                                  tmp_path: Path) -> None:
    log_fake_training_run("splits", "vgg19", 0, 0.96)
    log_fake_training_run("splits", "concat_cnn", 0, 0.95)
    other = log_fake_training_run("splits", "resnet50", 1, 0.80, split=1)
    exp = mlflow.get_experiment_by_name("splits").experiment_id
    md = build_report([exp], tmp_path / "r", latency=False).markdown
    assert f"resnet50 ([{other[:8]}]" in md
    assert "other test split: scored on other test images than the ranked runs" in md
    ranking = md[md.index("### Ranking"):md.index("Left out of this ranking")]
    assert "resnet50" not in ranking


def test_every_sentence_says_what_is_true(mlflow_uri: str, tmp_path: Path) -> None:
    """The unpaired reason is the real one; figures are per data identity; the accuracy axis
    follows one rule for one run and many; reliability bins show their counts."""
    from tracking.evaluation.plots import (
        MIN_BIN_IMAGES,
        accuracy_by_model_figure,
        reliability_by_model_figure,
    )

    # c on splits 0 and 1 (two seeds), a on split 0 only, b on split 1 only: a and b share no
    # test image, though both logged predictions tables
    ids = [log_fake_training_run("truth", "c", 0, 0.9),
           log_fake_training_run("truth", "c", 1, 0.9, split=1),
           log_fake_training_run("truth", "a", 0, 0.96),
           log_fake_training_run("truth", "b", 1, 0.5, split=1)]
    md = build_report([mlflow.get_experiment_by_name("truth").experiment_id], tmp_path / "r",
                      filter_string="params.model != 'x'", latency=False).markdown
    assert all(i[:8] in md for i in ids)
    assert "| a − b | – | – | – | – | – | – | their test splits differ (other test images): " \
           "not paired |" in md
    assert "no test split with both models' predictions tables" not in md

    for model, source in (("a", "/data/cats"), ("a", "/data/dogs")):
        log_fake_training_run("figs", model, 0, 0.9, dataset="folder",
                              params={"data_source": source})
    report = build_report([mlflow.get_experiment_by_name("figs").experiment_id],
                          tmp_path / "f", latency=False)
    names = {p.name for p in (tmp_path / "f").iterdir()}
    for section in ("folder-cats", "folder-dogs"):  # one set per identity, none pooled
        assert f"accuracy_by_model_{section}.png" in names
        assert f"curves_by_model_{section}.png" in names
    assert "accuracy_by_model.png" not in names and len(report.groups) == 2

    one = accuracy_by_model_figure(["m"], [[0.96]], chance=0.1)
    many = accuracy_by_model_figure(["m", "n"], [[0.94, 0.95, 0.96], [0.97]], chance=0.1)
    assert one.axes[0].get_ylim()[0] == many.axes[0].get_ylim()[0] == pytest.approx(0.1)

    fig = reliability_by_model_figure({"m": (np.array([0.35, 0.65, 0.95]),
                                             np.array([0.0, 1.0, 0.96]),
                                             np.array([1, 3, 50]), 0.018)}, 15)
    ax = fig.axes[0]
    assert {t.get_text() for t in ax.texts} >= {"1", "3", "50"}  # every bin's count shown
    joined = [line for line in ax.get_lines() if line.get_label().startswith("m (ECE")]
    assert list(joined[0].get_xdata()) == [0.95]  # bins under MIN_BIN_IMAGES are not joined
    assert MIN_BIN_IMAGES == 10 and "fewer than 10 images" in ax.get_title()


def test_runs_of_one_model_at_other_settings_are_not_pooled(mlflow_uri: str,
                                                            tmp_path: Path) -> None:
    """The recipe and the recipe at 30 epochs: two rows and a paired verdict, not one row
    `0.93 ± 0.02 over seeds`."""
    log_fake_training_run("settings", "vgg19", 0, 0.90, params={"effective_epochs": 10})
    log_fake_training_run("settings", "vgg19", 0, 0.96, params={"effective_epochs": 30})
    md = build_report([mlflow.get_experiment_by_name("settings").experiment_id], tmp_path / "r",
                      filter_string="params.model = 'vgg19'", latency=False).markdown
    assert "| 1 | vgg19 (30 epochs) | digits | 1 | 0.9600 (single run) |" in md
    assert "| 2 | vgg19 | digits | 1 | 0.9000 (single run) |" in md
    assert "| vgg19 (30 epochs) − vgg19 |" in md  # judged image by image


def write_pets(root: Path, per_class: int, shade: int) -> None:
    """A tiny folder data set of real PNGs, classes cat and dog (cat dark, dog light)."""
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            value = (40 if k == 0 else 210) + shade + i % 5
            Image.new("RGB", (10, 10), (value,) * 3).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_two_folder_data_sets_with_one_name_are_two_sections_and_two_registered_models(
        mlflow_uri: str, tmp_path: Path) -> None:
    """Two folders both called `pets`, with the same class names, trained for real: the
    report keeps them apart and the registry gives each its own name from its identity."""
    from tracking.comparison.promotion import promote
    from tracking.train import main

    write_pets(tmp_path / "a" / "pets", 12, 0)
    write_pets(tmp_path / "b" / "pets", 14, 3)
    for folder in ("a", "b"):
        assert main(["--model", "concat_cnn", "--dataset", "folder", "--data-dir",
                     str(tmp_path / folder / "pets"), "--epochs", "1", "--image-size", "16",
                     "--batch-size", "8", "--experiment", "pets", "--no-system-metrics",
                     "--checkpoint-every", "0"]) == 0
    runs = mlflow.search_runs(experiment_names=["pets"], output_format="list")
    params = {Path(r.data.params["data_source"]).parent.name: r.data.params for r in runs}
    assert set(params) == {"a", "b"}
    digests = {k: p["data_digest"] for k, p in params.items()}
    assert digests["a"] != digests["b"] and all(len(d) == 16 for d in digests.values())
    assert {p["data_layout"] for p in params.values()} == {"class folders"}

    report = build_report([mlflow.get_experiment_by_name("pets").experiment_id],
                          tmp_path / "r", latency=False)
    assert len(report.groups) == 2 and all(g.n == 1 for g in report.groups)
    assert len({g.dataset for g in report.groups}) == 2  # two sections, nothing pooled

    names = {Path(r.data.params["data_source"]).parent.name: promote(r.info.run_id).name
             for r in runs}
    assert names == {k: f"pets-{d[:8]}-classifier" for k, d in digests.items()}


@pytest.mark.slow
def test_a_batch_cut_to_a_small_train_split_is_labelled_capped(mlflow_uri: str, tmp_path: Path,
                                                               capsys) -> None:
    """A folder whose train split is smaller than --batch-size 64 trains at its whole split:
    the report says the batch was capped from the one asked for; a batch that fit does not."""
    from tracking.train import main

    write_pets(tmp_path / "pets", 12, 0)
    for batch in ("64", "8"):
        assert main(["--model", "concat_cnn", "--dataset", "folder", "--data-dir",
                     str(tmp_path / "pets"), "--epochs", "1", "--image-size", "16",
                     "--batch-size", batch, "--experiment", "capped", "--no-system-metrics",
                     "--checkpoint-every", "0"]) == 0
    runs = mlflow.search_runs(experiment_names=["capped"], output_format="list")
    params = {r.data.params["batch_size"]: r.data.params for r in runs}
    train_size = int(params["64"]["train_size"])
    assert train_size < 64 and params["64"]["effective_batch_size"] == str(train_size)
    assert f"batch size 64 cut to {train_size}" in capsys.readouterr().err
    md = build_report([mlflow.get_experiment_by_name("capped").experiment_id],
                      tmp_path / "r", filter_string="params.model = 'concat_cnn'",
                      latency=False, include_smoke=True).markdown
    assert f"| concat_cnn (batch {train_size}, capped from 64) [1 epochs] | folder |" in md
    assert "| concat_cnn (batch 8) [1 epochs] | folder |" in md


def tiny_cnn(input_shape: tuple[int, int, int] | None = None, classes: int = 10):
    """A model small enough to train for real at its recipe's epochs in a test."""
    import keras

    inputs = keras.Input(input_shape or (16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


@pytest.mark.slow
def test_a_tuned_run_with_fewer_epochs_than_the_recipe_is_no_smoke_run(
        mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained for real in one store: the model at its recipe (3 epochs) and tuned (1 epoch,
    the tuning's choice, tagged `study_variant=tuned` as the fair study tags it). Its epochs
    are a tuned setting, not a smaller budget: both are in the table and judged against each
    other, nothing is left out as smoke. An untagged run cut to 1 epoch still is."""
    from models import MODELS, ModelSpec, Recipe
    from tracking.comparison.groups import RECIPE
    from tracking.config import Config
    from tracking.training.loop import train

    monkeypatch.setitem(MODELS, "tiny_cnn", ModelSpec(
        tiny_cnn, Recipe(epochs=3, batch_size=64, learning_rate=3e-3), min_image_size=16))
    common = dict(model="tiny_cnn", image_size=16, experiment="tuned-epochs",
                  checkpoint_every=0, system_metrics=False)
    recipe = train(Config(**common), tags={VARIANT_TAG: RECIPE})["run_id"]
    tuned = train(Config(**common, epochs=1, batch_size=32, learning_rate=1e-2),
                  tags={VARIANT_TAG: TUNED, "tuning_run_id": "0" * 32, "tuned_trial": "2"}
                  )["run_id"]
    cut = train(Config(**common, epochs=1))["run_id"]
    # the tuned setting trained again by hand, untagged: its own setting, not a cut budget
    by_hand = train(Config(**common, epochs=1, batch_size=32, learning_rate=1e-2))["run_id"]
    runs = {r: mlflow.get_run(r).data.params["effective_epochs"]
            for r in (recipe, tuned, cut, by_hand)}
    assert runs == {recipe: "3", tuned: "1", cut: "1", by_hand: "1"}

    report = build_report([mlflow.get_experiment_by_name("tuned-epochs").experiment_id],
                          tmp_path / "r", filter_string="params.model = 'tiny_cnn'",
                          latency=False)
    md = report.markdown
    table = md[md.index("| Rank | Model"):md.index("### Ranking")]
    assert "| 1 | tiny_cnn (tuned) | digits | 1 |" in table and tuned[:8] in table
    assert "| – | tiny_cnn (recipe) | digits | 1 |" in table and recipe[:8] in table
    assert "[1 epochs]" not in table  # the tuned row carries no budget
    assert "### Recipe against tuned" in md
    assert [line for line in md.splitlines() if line.startswith("| tiny_cnn | ")]
    assert "tiny_cnn (1 epochs, batch 32, lr 0.01)" in table and by_hand[:8] in table
    left = md.split("Left out of this ranking:")[1].split("###")[0]
    assert tuned[:8] not in left and recipe[:8] not in left and by_hand[:8] not in left
    assert cut[:8] in left and "tiny_cnn [1 epochs]" in left and "smoke run: 1 epochs" in left


def test_the_data_digest_separates_runs_on_one_folder_whose_files_changed() -> None:
    from tracking.comparison.groups import assign_sections, data_identity

    def run(source: str, digest: str, dataset: str = "folder") -> RunSummary:
        return RunSummary(run_id=source + digest, experiment_id="0", run_name="", model="a",
                          dataset=dataset, seed="0", test_accuracy=0.9, f1_macro=None,
                          best_epoch=None, epochs_run=None, train_seconds=None,
                          images_per_second=None, num_params=None, class_names=CLASSES,
                          confusion=None, data_source=source, data_digest=digest,
                          image_size=32)

    before, after = run("/data/pets", "1111aaaa2222bbbb"), run("/data/pets", "3333cccc4444dddd")
    same = run("/data/pets", "1111aaaa2222bbbb")
    assert data_identity(before) != data_identity(after)
    assert data_identity(before) == data_identity(same)
    elsewhere = run("/other/pets", "5555eeee6666ffff")
    old = run("/data/pets", "")  # logged before data digests: its folder alone
    assign_sections([before, after, same, elsewhere, old])
    assert before.dataset == same.dataset
    assert len({before.dataset, after.dataset, elsewhere.dataset, old.dataset}) == 4
    assert "1111aaaa" in before.dataset and "3333cccc" in after.dataset
    # a built-in data set is its name, wherever its files were read from
    fashion = [run(f"/x{i}", "", dataset="fashion_mnist") for i in range(2)]
    assert data_identity(fashion[0]) == data_identity(fashion[1])


@pytest.mark.slow
def test_a_full_run_is_ranked_over_a_smaller_budget(mlflow_uri: str, tmp_path: Path,
                                                    capsys) -> None:
    """One run at every image (limit 0) and one at limit 300: the full one is the ranked
    budget, the other left out as the smoke run (limit 0 once counted as the smallest)."""
    from tracking import compare
    from tracking.config import Config
    from tracking.training.loop import train

    full = train(Config(model="concat_cnn", epochs=1, batch_size=64, checkpoint_every=0,
                        experiment="budgets"))["run_id"]
    smoke = train(Config(model="concat_cnn", epochs=1, batch_size=32, limit=300,
                         checkpoint_every=0, experiment="budgets", seed=1))["run_id"]
    capsys.readouterr()
    assert compare.main(["--experiment", "budgets", "--no-log", "--no-latency", "--output",
                         str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    ranked = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert ranked and full[:8] in ranked[0], out[:3000]
    left = out.split("Left out of this ranking:")[1]
    assert smoke[:8] in left and "smoke run: limit 300" in left
