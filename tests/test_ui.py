"""The MLflow UI in a real (headless) browser: our runs and their test accuracy on screen.

A real `mlflow server` on 127.0.0.1 with a temporary store; two tiny runs trained against it
over HTTP; Chromium renders the experiment's runs table (JavaScript ran: the server's HTML is an
empty shell) and saves a screenshot. Set MLFLOW_UI_SCREENSHOT=path to keep the screenshot.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

import mlflow
import pytest
import requests
from processes import chromium, headless_chromium, mlflow_server

from tracking import compare, server
from tracking.config import Config

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium() is None,
                                 reason="headless Chromium not installed (apt-get install "
                                        "chromium)")]


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_runs_table_shows_our_runs_and_test_accuracy(tmp_path: Path, capsys,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tracking.training.loop import train

    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        try:
            results = [train(Config(model="concat_cnn", dataset="digits", epochs=1,
                                    batch_size=32, limit=200, experiment="ui-check", seed=seed,
                                    run_name=f"ui-run-{name}", checkpoint_every=0))
                       for seed, name in enumerate(("alpha", "beta"))]
            capsys.readouterr()
            assert server.main(["ui", "--experiment", "ui-check"]) == 0
        finally:
            mlflow.set_tracking_uri(None)
        address = capsys.readouterr().out.strip()
        assert address.startswith(f"{url}/#/experiments/") and "workflowType=machine_learning" \
            in address and "viewStateShareKey=key-metrics" in address

        shell = requests.get(address.split("#")[0], timeout=30).text
        assert "ui-run-alpha" not in shell  # the server sends a shell; the page's scripts render

        shot = tmp_path / "mlflow_ui.png"
        text = ""
        for budget in (15000, 30000, 60000):  # a loaded machine may need more virtual time
            text = visible_text(headless_chromium(address, tmp_path / f"profile-{budget}",
                                                  screenshot=shot, budget_ms=budget))
            if all(f"ui-run-{n}" in text for n in ("alpha", "beta")) and "test_accuracy" in text:
                break

        # the way a user finds it: the experiments list, then the experiment's own address
        listed = visible_text(headless_chromium(f"{url}/#/experiments", tmp_path / "profile-list",
                                                budget_ms=30000))
        experiment_id = address.split("/#/experiments/")[1].split("/")[0]
        plain = visible_text(headless_chromium(f"{url}/#/experiments/{experiment_id}",
                                               tmp_path / "profile-plain", budget_ms=30000))

    assert "ui-check" in listed, listed[:2000]
    # what MLflow 3.17 does and we cannot change (README, "Then look at the runs"): a new
    # browser opens an experiment on the GenAI overview, whose side bar offers the training
    # runs; our printed address above opens the runs table itself
    assert "Training runs" in plain, plain[:2000]

    assert "ui-run-alpha" in text and "ui-run-beta" in text, text[:3000]
    assert "2 matching runs" in text, text[:3000]  # the training-runs table, not GenAI traces
    assert "test_accuracy" in text and "test_f1_macro" in text
    for result in results:
        assert str(result["test_accuracy"]) in text, (result["test_accuracy"], text[:3000])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("MLFLOW_UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MLFLOW_UI_SCREENSHOT"])


ML_SIDE_BAR = "Model registry"  # the "Model training" side bar; GenAI's offers these instead:
GENAI_SIDE_BAR = ("AI Gateway", "Prompts", "Observability")


def printed_address(text: str, label: str) -> str:
    """The address after `label` in what a command printed."""
    match = re.search(re.escape(label) + r"\s*(http://\S+)", text)
    assert match, (label, text[-2000:])
    return match.group(1)


@pytest.mark.slow
def test_every_address_the_walk_prints_opens_the_model_training_pages(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's walk against a real server: training, tuning, the study, promotion, the
    report and gradient descent file their runs in one experiment (gradient descent in its
    own) and print addresses that Chromium opens on MLflow's "Model training" pages (not its
    GenAI pages), each showing what it names; the run page lists the logged model."""
    import gradient_descent.cli
    import tracking.promote
    import tracking.study
    import tracking.train
    import tuning.__main__

    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("SUITE_UI_URL", "http://127.0.0.1:1")  # the server's own wins
        mlflow.set_tracking_uri(url)
        tiny = ["--limit", "200", "--epochs", "1"]
        try:
            assert tracking.train.main(["--model", "concat_cnn", *tiny, "--batch-size", "32",
                                        "--checkpoint-every", "0"]) == 0
            run_page = printed_address(capsys.readouterr().err, "run page:")
            assert tuning.__main__.main(["--model", "concat_cnn", "--limit", "150", "--n-trials",
                                    "1", "--max-epochs", "1"]) == 0
            tuning_page = printed_address(capsys.readouterr().err, "parent run:")
            assert tracking.study.main(["--models", "concat_cnn", "--seeds", "1", *tiny,
                                        "--promote", "false", "--output",
                                        str(tmp_path / "study")]) == 0
            study_page = printed_address(capsys.readouterr().err, "parent run:")
            run_id = run_page.split("/runs/")[1].split("?")[0]
            assert tracking.promote.main(["--run-id", run_id]) == 0
            model_page = printed_address(capsys.readouterr().err, "registered model:")
            assert compare.main(["--no-latency", "--output", str(tmp_path / "report")]) == 0
            err = capsys.readouterr().err
            runs_table = printed_address(err, "runs table of 'keras-cnn-comparison':")
            assert err.count("runs table of") == 1, err  # every compared run in one place
            assert gradient_descent.cli.main(["--output", str(tmp_path / "gd")]) == 0
            descent_page = printed_address(capsys.readouterr().err, "run page:")
        finally:
            mlflow.set_tracking_uri(None)

        experiment = mlflow.MlflowClient(url).get_experiment_by_name("keras-cnn-comparison")
        pages = {"training run": (run_page, "concat_cnn-digits"),
                 "tuning parent": (tuning_page, "concat_cnn-digits"),
                 "study parent": (study_page, "study-digits"),
                 "registered model": (model_page, "digits-classifier"),
                 "runs table": (runs_table, "matching runs"),
                 "gradient descent": (descent_page, "gradient-descent")}
        texts = {}
        for kind, (address, expected) in pages.items():
            assert address.startswith(url + "/#/"), (kind, address)
            assert "workflowType=machine_learning" in address, (kind, address)
            if kind not in ("registered model", "gradient descent"):
                assert f"/#/experiments/{experiment.experiment_id}/" in address, (kind, address)
            shot = tmp_path / f"{kind.replace(' ', '_')}.png" if kind == "training run" else None
            for budget in (15000, 30000, 60000):  # a loaded machine may need more virtual time
                text = visible_text(headless_chromium(
                    address, tmp_path / f"profile-{kind}-{budget}", screenshot=shot,
                    budget_ms=budget, size="1600,2600"))
                if expected in text and ML_SIDE_BAR in text:
                    break
            texts[kind] = text

    for kind, text in texts.items():
        assert pages[kind][1] in text, (kind, text[:2000])
        assert ML_SIDE_BAR in text, (kind, text[:2000])
        for genai in GENAI_SIDE_BAR:
            assert genai not in text, (kind, genai, text[:2000])
    # MLflow 3.17 lists a run's logged models on its Overview, below metrics and parameters
    assert re.search(r"Logged models \(1\).*\bmodel\b.*Ready.*digits-classifier", texts[
        "training run"]), texts["training run"][-3000:]
    shot = tmp_path / "training_run.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("MLFLOW_RUN_PAGE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MLFLOW_RUN_PAGE_SCREENSHOT"])
