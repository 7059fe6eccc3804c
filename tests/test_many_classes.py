"""Many classes (issue 22, part 4): above PER_CLASS_METRICS_MAX classes a run logs its
per-class figures as one table, `per_class_metrics.csv`, instead of five metric keys a class
(about 1,000 for 200 classes, where MLflow's chart view stalls); its confusion figure stays a
fixed, readable size; the comparison report reads the table. Real Keras training and a real
MLflow store."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tracking import compare
from tracking.comparison.groups import ModelGroup, RunSummary
from tracking.comparison.tables import per_class_lines
from tracking.config import Config
from tracking.evaluation.evaluate import (
    PER_CLASS_COLUMNS,
    PER_CLASS_FILE,
    PER_CLASS_METRICS_MAX,
    evaluation_from_probabilities,
    evaluation_metrics,
    log_evaluation,
    read_per_class_csv,
    read_per_class_metrics,
)
from tracking.evaluation.plots import TOP_CONFUSIONS, top_confusions
from tracking.training.loop import train

CLASSES = 200
PER_CLASS = 4  # images per class: with --test-split 0.34 --val-split 0.5 each split gets one


def tiny_folder(root: Path, classes: int = CLASSES, per_class: int = PER_CLASS) -> Path:
    """One folder per class (`c000` ...) of 8x8 PNGs, each class its own colour plus noise."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = root / f"c{k:03d}"
        folder.mkdir(parents=True)
        colour = np.array([(37 * k) % 256, (91 * k) % 256, (53 * k) % 256])
        for i in range(per_class):
            pixels = np.clip(colour + rng.integers(-15, 15, (8, 8, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def artifact(run_id: str, path: str, scratch: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(scratch)))


def test_200_classes_log_one_table_and_the_report_reads_it(mlflow_uri: str,
                                                          tmp_path: Path) -> None:
    root = tiny_folder(tmp_path / "data")
    started = time.perf_counter()
    # concat_cnn's smallest working input is 16 px (8 fails at its exit pool)
    run_id = train(Config(model="concat_cnn", dataset="folder", data_dir=str(root),
                          image_size=16, epochs=1, batch_size=32, test_split=0.34,
                          val_split=0.5, experiment="many", checkpoint_every=0,
                          system_metrics=False))["run_id"]
    trained = time.perf_counter() - started

    metrics = mlflow.get_run(run_id).data.metrics
    assert not [k for k in metrics if "_class_" in k]
    assert "test_f1_macro" in metrics and "test_roc_auc_macro" in metrics
    assert len(metrics) < 40, sorted(metrics)  # not 1,000: no key per class and statistic

    scratch = tmp_path / "scratch"
    table = read_per_class_csv(artifact(run_id, PER_CLASS_FILE, scratch)
                               .read_text(encoding="utf-8"))
    assert list(table.columns) == list(PER_CLASS_COLUMNS) and len(table) == CLASSES
    assert table["label"].tolist() == list(range(CLASSES))
    assert table["class_name"].tolist() == [f"c{k:03d}" for k in range(CLASSES)]
    test_size = int(mlflow.get_run(run_id).data.params["test_size"])
    assert table["support"].sum() == test_size and table["support"].min() >= 1
    assert table[["precision", "recall", "f1"]].notna().all().all()
    assert table["f1"].mean() == pytest.approx(metrics["test_f1_macro"])
    # the reader the report uses gives the same table
    pd.testing.assert_frame_equal(read_per_class_metrics(run_id, metrics), table)

    with Image.open(artifact(run_id, "confusion_matrix.png", scratch)) as picture:
        assert picture.size == (1600, 800)  # fixed, not grown with the class count
    report_text = artifact(run_id, "classification_report.txt", scratch).read_text()
    assert sum(line.strip().startswith("c") for line in report_text.splitlines()) == CLASSES

    out = tmp_path / "report"
    assert compare.main(["--experiment", "many", "--output", str(out), "--no-latency"]) == 0
    md = (out / "comparison.md").read_text()
    section = md.split("### Per class\n")[1].split("###")[0]
    assert "| Class (label) | Test images | concat_cnn (batch 32) [1 epochs] F1 (P / R) |" \
        in section
    rows = [line for line in section.splitlines() if line.startswith("| `c")]
    assert len(rows) == 10
    hardest = table.sort_values(["f1", "support", "label"], ascending=[True, False, True],
                                kind="stable").head(10)
    assert [row.split("`")[1] for row in rows] == hardest["class_name"].tolist()
    assert f"the 10 of {CLASSES} classes with the lowest F1" in section
    assert PER_CLASS_FILE in section
    with Image.open(out / "confusion_matrices.png") as picture:
        assert max(picture.size) <= 2000
    assert trained < 60, trained


def test_the_threshold_and_the_reader_of_older_runs(mlflow_uri: str) -> None:
    """At PER_CLASS_METRICS_MAX classes the keys stay (five a class), one more and they go;
    the table is logged either way. A run with keys but no table (from before it) is read
    back from its keys, support unknown; a run with neither reads as None."""
    rng = np.random.default_rng(0)

    def evaluation(classes: int):
        y = np.repeat(np.arange(classes), 2)
        return evaluation_from_probabilities(rng.dirichlet(np.ones(classes), len(y)), y,
                                             [f"n{k}" for k in range(classes)])

    at = evaluation_metrics(evaluation(PER_CLASS_METRICS_MAX))
    assert sum("_class_" in k for k in at) == 5 * PER_CLASS_METRICS_MAX
    above = evaluation(PER_CLASS_METRICS_MAX + 1)
    assert not [k for k in evaluation_metrics(above) if "_class_" in k]

    names = [f"n{k}" for k in range(PER_CLASS_METRICS_MAX + 1)]
    with mlflow.start_run() as run:
        log_evaluation(above, names)
    table = read_per_class_metrics(run.info.run_id)
    assert len(table) == PER_CLASS_METRICS_MAX + 1 and table["support"].tolist() == [2] * 51
    assert np.allclose(table["roc_auc"], above.per_class["roc_auc"])

    old = {"test_accuracy": 0.5, "test_f1_class_0": 0.25, "test_f1_class_2": 0.75,
           "test_recall_class_1": 1.0, "tuned_test_f1_class_0": 0.9}
    with mlflow.start_run() as run:
        mlflow.log_metrics(old)
    table = read_per_class_metrics(run.info.run_id, old, ("a", "b", "c"))
    assert table["class_name"].tolist() == ["a", "b", "c"]
    assert table["support"].tolist() == [-1, -1, -1]
    assert table["f1"].tolist()[::2] == [0.25, 0.75] and np.isnan(table["f1"][1])
    assert table["recall"][1] == 1.0
    assert read_per_class_metrics(run.info.run_id, {"test_accuracy": 0.5}) is None


def test_top_confusions_order() -> None:
    cm = np.array([[5, 2, 0], [3, 1, 3], [0, 2, 9]])
    # 3 of 7 (class 1 -> 0) and 3 of 7 (1 -> 2) tie on count and share: label order; then
    # 2 of 7 (0 -> 1) before 2 of 11 (2 -> 1) by share
    assert top_confusions(cm) == [(1, 0), (1, 2), (0, 1), (2, 1)]
    assert top_confusions(cm, 2) == [(1, 0), (1, 2)]
    assert top_confusions(np.eye(4, dtype=int) * 3) == []
    assert TOP_CONFUSIONS == 30


def summary(run_id: str, f1: list[float], support: list[int]) -> RunSummary:
    """A read-back run of three classes with the per-class table `f1` / `support`."""
    table = pd.DataFrame({"label": [0, 1, 2], "class_name": ["a|b", "c", "d"],
                          "support": support, "precision": [0.5, 0.5, 0.5],
                          "recall": [1.0, 1.0, 1.0], "f1": f1, "roc_auc": [np.nan] * 3,
                          "average_precision": [np.nan] * 3})
    return RunSummary(run_id=run_id, experiment_id="1", run_name=run_id, model="m",
                      dataset="d", seed="0", test_accuracy=0.5, f1_macro=None, best_epoch=1,
                      epochs_run=1, train_seconds=1.0, images_per_second=1.0, num_params=1,
                      class_names=["a|b", "c", "d"], confusion=None, per_class=table)


def test_the_per_class_table_pools_runs_and_breaks_ties_by_evidence() -> None:
    pooled = ModelGroup("d", "m", [summary("r1", [0.2, 0.6, 0.4], [3, 5, 2]),
                                   summary("r2", [0.4, 0.6, np.nan], [3, 5, 2])])
    assert np.allclose(pooled.per_class("f1"), [0.3, 0.6, 0.4])  # NaN: the runs that have it
    other = ModelGroup("d", "n", [summary("r3", [0.3, 0.0, 0.4], [3, 5, 2])])
    lines = per_class_lines([pooled, other], rows=2)
    rows = [line for line in lines if line.startswith("| `")]
    # mean F1 over the models: a 0.3, c 0.3 (tie: c has more test images), d 0.4
    assert rows == ["| `c` (1) | 5 | 0.600 (0.500 / 1.000) | 0.000 (0.500 / 1.000) |",
                    "| `a\\|b` (0) | 3 | 0.300 (0.500 / 1.000) | 0.300 (0.500 / 1.000) |"]
    assert "the 2 of 3 classes" in "\n".join(lines)
    without = ModelGroup("d", "m", [RunSummary(**{**vars(summary("r4", [0, 0, 0], [1, 1, 1])),
                                                  "per_class": None})])
    assert without.per_class("f1") is None and per_class_lines([without]) == []
