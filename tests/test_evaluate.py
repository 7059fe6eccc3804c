"""The evaluation a run logs, checked against answers worked out by hand, and what a run
records about its origin and its classes, in a real MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image
from processes import chromium, headless_chromium, mlflow_server
from test_ui import visible_text

from tracking import predict
from tracking.comparison.selection import read_names_and_confusion
from tracking.config import Config
from tracking.data.dataset import Dataset
from tracking.evaluation.class_names import read_class_names
from tracking.evaluation.evaluate import (
    evaluation_from_probabilities,
    evaluation_metrics,
    log_evaluation,
    read_per_class_metrics,
)
from tracking.evaluation.outcomes import (
    PREDICTIONS_FILE,
    PredictionsError,
    mistakes_gallery_figure,
    read_mistake_images,
    read_predictions,
    worst_mistakes,
)
from tracking.training.loop import train
from tracking.training.provenance import log_git_diff, log_provenance, run_tags, source_state

# Seven test images, three classes; every confidence sits inside one of the 15 bins (none on
# an edge), and images 0 and 6 share the bin (0.667, 0.733].
PROBS = np.array([
    [0.70, 0.20, 0.10],  # true 0, right, confidence 0.70
    [0.40, 0.50, 0.10],  # true 0, taken for 1 at 0.50
    [0.12, 0.78, 0.10],  # true 1, right, 0.78
    [0.23, 0.35, 0.42],  # true 1, taken for 2 at 0.42 (1 is second: a top-2 hit)
    [0.05, 0.05, 0.90],  # true 2, right, 0.90
    [0.62, 0.28, 0.10],  # true 2, taken for 0 at 0.62 (2 is last: a top-2 miss)
    [0.72, 0.18, 0.10],  # true 0, right, 0.72
])
LABELS = np.array([0, 0, 1, 1, 2, 2, 0])
NAMES = ("zero", "one", "two")


def test_known_predictions_give_hand_computed_metrics() -> None:
    ev = evaluation_from_probabilities(PROBS, LABELS, NAMES)
    m = evaluation_metrics(ev)
    assert m["test_accuracy"] == pytest.approx(4 / 7)
    assert m["test_top_2_accuracy"] == pytest.approx(6 / 7)
    assert "test_top_5_accuracy" not in m  # 3 classes: top-5 says nothing
    # ECE: the bin of 0.70 and 0.72 (both right) weighs 2/7 with |1 - 0.71|; the five other
    # images are alone in their bins: |1-.78| + |1-.90| + |0-.50| + |0-.42| + |0-.62|
    assert m["test_ece"] == pytest.approx((2 * 0.29 + 0.22 + 0.10 + 0.50 + 0.42 + 0.62) / 7)
    assert list(ev.reliability.counts) == [1, 1, 1, 2, 1, 1]
    # one-vs-rest AUC = share of (positive, negative) pairs ranked right, ties counting half:
    # class 0: 11 of 12 pairs (0.40 is below the negative 0.62); class 1: 9 of 10 (0.35 < 0.50);
    # class 2: 0.90 beats all 5, 0.10 ties four negatives at 0.10 and loses to 0.42: 7 of 10
    assert m["test_roc_auc_class_0"] == pytest.approx(11 / 12)
    assert m["test_roc_auc_class_1"] == pytest.approx(9 / 10)
    assert m["test_roc_auc_class_2"] == pytest.approx(7 / 10)
    assert m["test_roc_auc_macro"] == pytest.approx((11 / 12 + 9 / 10 + 7 / 10) / 3)
    # class 0 ranked by its probability: + + - + ...: precision 1, 1, 3/4 at recall 1/3, 2/3, 1
    assert m["test_average_precision_class_0"] == pytest.approx((1 + 1 + 0.75) / 3)
    # Brier: squared distance to the one-hot truth, summed over classes, mean over images
    brier = np.mean([0.14, 0.62, 0.0728, 0.6518, 0.015, 1.2728, 0.1208])
    assert m["test_brier_score"] == pytest.approx(brier)
    # per-class precision / recall / F1 by label index
    assert m["test_recall_class_0"] == pytest.approx(2 / 3)
    assert m["test_precision_class_2"] == pytest.approx(1 / 2)


def test_gallery_holds_the_most_confident_mistakes(mlflow_uri: str) -> None:
    # the three mistakes, most confident first: image 5 (0.62), 1 (0.50), 3 (0.42)
    np.testing.assert_array_equal(worst_mistakes(PROBS, LABELS), [5, 1, 3])
    images = np.arange(7, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    fig = mistakes_gallery_figure(PROBS, LABELS, NAMES, images, title="t")
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [
        "true two\npredicted zero\np = 0.620", "true zero\npredicted one\np = 0.500",
        "true one\npredicted two\np = 0.420"]
    assert [int(ax.images[0].get_array()[0, 0, 0]) for ax in shown] == [5, 1, 3]
    assert "3 of 3 wrong" in fig._suptitle.get_text()

    ev = evaluation_from_probabilities(PROBS, LABELS, NAMES)
    with mlflow.start_run() as run:
        log_evaluation(ev, NAMES, images=images, test_digest="d1")
    stored = read_mistake_images(run.info.run_id, Path.cwd())
    assert list(stored) == [5, 1, 3] and int(stored[1][0, 0, 0]) == 1


def test_predictions_table_round_trips_and_is_replaced_not_appended(mlflow_uri: str) -> None:
    ev = evaluation_from_probabilities(PROBS, LABELS, NAMES)
    with mlflow.start_run() as run:
        log_evaluation(ev, NAMES, test_digest="abc123")
        log_evaluation(ev, NAMES, test_digest="abc123")  # e.g. a study reported again
    frame = read_predictions(run.info.run_id)
    assert len(frame) == 7
    assert list(frame.columns) == ["index", "true_label", "predicted_label", "probability_0",
                                   "probability_1", "probability_2", "test_digest"]
    assert list(frame["predicted_label"]) == [0, 1, 1, 2, 2, 0, 0]
    assert list(frame["true_label"]) == list(LABELS) and set(frame["test_digest"]) == {"abc123"}
    np.testing.assert_allclose(frame[["probability_0", "probability_1", "probability_2"]],
                               PROBS, atol=1e-6)
    shown = json.loads(mlflow.get_run(run.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": PREDICTIONS_FILE, "type": "table"} in shown  # the UI shows it as a table

    with mlflow.start_run() as bare:
        mlflow.log_metric("test_accuracy", 0.5)
    with pytest.raises(PredictionsError, match=f"run {bare.info.run_id} has no readable"):
        read_predictions(bare.info.run_id)


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder,
                   check=True, capture_output=True)


def test_dirty_tree_gets_the_tag_and_the_diff(mlflow_uri: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("epochs = 3\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    clean = source_state(repo)
    assert clean is not None and not clean.dirty and clean.diff == ""

    (repo / "train.py").write_text("epochs = 30\n")
    (repo / "notes.txt").write_text("new\n")
    dirty = source_state(repo)
    assert dirty.dirty and dirty.commit == clean.commit and len(dirty.commit) == 40
    for state, name in ((clean, "clean"), (dirty, "dirty")):
        with mlflow.start_run(run_name=name, tags=run_tags(Config(), source=state)):
            log_git_diff(state)
    client = mlflow.MlflowClient()
    runs = {r.info.run_name: r for r in client.search_runs(["0"])}
    assert runs["dirty"].data.tags["git_dirty"] == "true"
    assert runs["clean"].data.tags["git_dirty"] == "false"
    assert runs["dirty"].data.tags["mlflow.source.git.commit"] == clean.commit
    clean_files = {a.path for a in client.list_artifacts(runs["clean"].info.run_id)}
    assert "git_diff.patch" not in clean_files
    patch = mlflow.artifacts.load_text(f"runs:/{runs['dirty'].info.run_id}/git_diff.patch")
    assert "-epochs = 3\n+epochs = 30" in patch
    assert "# untracked, not in this diff: notes.txt" in patch
    outside = tmp_path / "plain"
    outside.mkdir()
    assert source_state(outside) is None  # no checkout: no commit tag, no diff


def test_260_long_class_names_round_trip(mlflow_uri: str) -> None:
    """Issue 17.2 (a): 260 names of 28 characters (7,540 characters joined) are no param,
    which MLflow would cut; class_names.json and the 260 rows of per_class_metrics.csv carry
    them (issue 22.4: above PER_CLASS_METRICS_MAX classes, no per-class metric keys)."""
    names = tuple(f"class-{i:03d}-" + "x" * 18 for i in range(260))
    assert all(len(n) == 28 for n in names)
    rng = np.random.default_rng(0)
    y = np.arange(520) % 260
    images = rng.integers(0, 255, (520, 32, 32, 3), dtype=np.uint8)
    data = Dataset(name="folder", class_names=names, source="test", x_train=images, y_train=y,
                   x_val=images, y_val=y, x_test=images, y_test=y)
    config = Config(model="concat_cnn", dataset="folder", data_dir="x", epochs=1).resolved()
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(260, activation="softmax")])
    probs = rng.dirichlet(np.ones(260), size=520)
    with mlflow.start_run() as run:
        log_provenance(config, config, model, data, devices=1, steps_per_epoch=1)
        log_evaluation(evaluation_from_probabilities(probs, y, names), names)
    logged = mlflow.get_run(run.info.run_id).data
    assert "class_names" not in logged.params
    assert logged.params["num_classes"] == "260"
    assert read_class_names(run.info.run_id) == names
    assert not [k for k in logged.metrics if "_class_" in k]
    table = read_per_class_metrics(run.info.run_id)
    assert table["class_name"].tolist() == list(names) and len(table) == 260
    source = predict.resolve_model(run_id=run.info.run_id)  # no model logged: the run's file
    assert source.class_names == names and source.image_size == 32


def class_folder(root: Path, names: tuple[str, ...], per_class: int = 10) -> Path:
    """One folder per class of small PNGs, each class its own colour (plus noise)."""
    rng = np.random.default_rng(1)
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        colour = np.array([255 * (k % 2), 120 * (k % 3), 60 * k], dtype=np.int64) % 256
        for i in range(per_class):
            pixels = np.clip(colour + rng.integers(-20, 20, (12, 12, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_tricky_class_names_survive_training_prediction_and_comparison(
        mlflow_uri: str, tmp_path: Path, capsys) -> None:
    """Issue 17.2 (b): `a b` / `a_b` once shared a metric key, `red,blue` was split in two."""
    names = ("a b", "a_b", "red,blue", "犬", "猫")
    root = class_folder(tmp_path / "data", names)
    results = train(Config(model="concat_cnn", dataset="folder", data_dir=str(root), epochs=2,
                           batch_size=8, experiment="names", checkpoint_every=0,
                           system_metrics=False))
    run_id = results["run_id"]
    logged = mlflow.get_run(run_id).data
    assert sorted(names) == list(names)  # the folders' order is the label order
    assert "class_names" not in logged.params  # a comma-joined list would not be exact
    assert read_class_names(run_id) == names
    assert {k for k in logged.metrics if k.startswith("test_f1_class_")} == {
        f"test_f1_class_{i}" for i in range(5)}

    source = predict.resolve_model(model_uri=f"runs:/{run_id}/model")
    assert source.class_names == names  # from the logged model's metadata
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.metadata.metadata["class_names"] == list(names)
    paths = [root / name / "0.png" for name in names]
    expected = np.asarray(model.predict(
        predict.read_images(paths, 32).astype(np.float64))).argmax(axis=1)
    capsys.readouterr()
    assert predict.main(["--run-id", run_id, *map(str, paths)]) == 0
    printed = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == [names[k] for k in expected]

    read_names, confusion = read_names_and_confusion(mlflow.get_run(run_id),
                                                     str(tmp_path / "scratch"))
    assert tuple(read_names) == names and confusion.shape == (5, 5)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed "
                                                "(apt-get install chromium)")
def test_run_artifacts_page_shows_the_evaluation(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One run's Artifacts tab in the real MLflow UI lists the figures and tables and shows
    the gallery of mistakes. MLFLOW_UI_SCREENSHOT=path keeps the screenshot (docs/)."""
    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        try:
            # all of digits for a few epochs: a model good enough for its mistakes to mean
            # something in the screenshot
            results = train(Config(model="concat_cnn", dataset="digits", epochs=4,
                                   experiment="artifacts", checkpoint_every=0))
            experiment_id = mlflow.get_run(results["run_id"]).info.experiment_id
        finally:
            mlflow.set_tracking_uri(None)
        page = (f"{url}/#/experiments/{experiment_id}/runs/{results['run_id']}/artifacts/"
                "misclassified_examples.png")
        shot = tmp_path / "run_artifacts.png"
        text = ""
        for budget in (20000, 40000):  # a loaded machine may need more virtual time
            text = visible_text(headless_chromium(page, tmp_path / f"profile-{budget}",
                                                  screenshot=shot, budget_ms=budget,
                                                  size="1600,1000"))
            if "reliability_diagram.png" in text:
                break
    for name in ("predictions.json", "reliability_diagram.png", "roc_pr_curves.png",
                 "misclassified_examples.png", "confusion_matrix.png", "class_names.json"):
        assert name in text, (name, text[:3000])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("MLFLOW_UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MLFLOW_UI_SCREENSHOT"])


def test_long_and_cjk_class_names_are_drawn_readably(tmp_path) -> None:
    """70-character names are shortened so that the figure shows them whole; names no
    installed font can draw become indices with a note, never boxes."""
    import io
    import warnings

    import numpy as np

    from tracking.evaluation.plots import (
        INDEX_NOTE,
        MAX_LABEL_CHARS,
        confusion_matrix_figure,
        label_fonts,
    )

    long_names = [f"{'very long class name ' * 3}{i}"[:70] for i in range(3)]
    cm = np.array([[5, 1, 0], [0, 6, 1], [2, 0, 4]])
    fig = confusion_matrix_figure(cm, long_names)
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(labels)) == 3 and all(len(t) <= MAX_LABEL_CHARS + 4 for t in labels)
    box = fig.bbox
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        extent = tick.get_window_extent()
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1  # not clipped
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1

    cjk = ["猫", "犬", "鳥"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = confusion_matrix_figure(cm, cjk)
        fig.savefig(io.BytesIO(), format="png")
    assert not [w for w in caught if "missing from font" in str(w.message)]  # no boxes
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    if label_fonts(cjk) is None:  # no CJK font installed here
        assert labels == ["0", "1", "2"] and INDEX_NOTE in fig.axes[0].get_title()
    else:
        assert labels == cjk
