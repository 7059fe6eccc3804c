"""A team's setup: one tracking server on PostgreSQL that every command talks to over HTTP,
and optuna-dashboard on a study's storage.

The PostgreSQL test starts a real throw-away cluster (Debian's server binaries, run as the
`postgres` user when we are root) and `mlflow server` against it; it is skipped, saying why,
where the binaries are missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import psycopg2
import pytest
import requests
from processes import free_port, mlflow_server, postgres_server, postgres_unavailable, running

from tracking.config import Config
from tracking.store.connect import check_tracking_uri


@pytest.mark.postgres
@pytest.mark.skipif(bool(postgres_unavailable()), reason=postgres_unavailable() or "ok")
def test_training_through_a_server_on_postgres(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tracking.training.loop import train

    with postgres_server() as database, mlflow_server(tmp_path / "server", database) as url:
        assert check_tracking_uri(database) == database  # the database answers directly too
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        try:
            assert check_tracking_uri() == url
            results = train(Config(model="concat_cnn", dataset="digits", epochs=1,
                                   batch_size=32, limit=200, experiment="team",
                                   run_name="team-run", checkpoint_every=0))
            run = mlflow.MlflowClient().get_run(results["run_id"])
            artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        finally:
            mlflow.set_tracking_uri(None)
        assert run.info.status == "FINISHED" and run.info.run_name == "team-run"
        assert run.data.metrics["test_accuracy"] == pytest.approx(results["test_accuracy"])
        assert {"confusion_matrix.csv", "classification_report.json"} <= artifacts
        # the run is in PostgreSQL, its files under the server's artifact folder
        conn = psycopg2.connect(database.replace("postgresql+psycopg2", "postgresql"))
        with conn, conn.cursor() as cur:
            cur.execute("SELECT name, status FROM runs WHERE run_uuid = %s",
                        (results["run_id"],))
            assert cur.fetchone() == ("team-run", "FINISHED")
        conn.close()
    assert list((tmp_path / "server" / "artifacts").rglob("confusion_matrix.csv"))


@pytest.mark.skipif(shutil.which("optuna-dashboard") is None,
                    reason="optuna-dashboard not installed (pip install optuna-dashboard)")
def test_optuna_dashboard_shows_a_study(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="dashboard-smoke", storage=storage,
                                direction="maximize")
    study.optimize(lambda trial: -(trial.suggest_float("x", -2, 2) - 1) ** 2, n_trials=3)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [shutil.which("optuna-dashboard") or "optuna-dashboard", storage, "--host",
           "127.0.0.1", "--port", str(port)]
    with running(cmd, tmp_path / "dashboard.log", ready_url=f"{url}/api/studies", timeout=60):
        studies = requests.get(f"{url}/api/studies", timeout=10).json()
        page = requests.get(f"{url}/dashboard", timeout=10)
    names = [s["study_name"] for s in studies["study_summaries"]]
    assert names == ["dashboard-smoke"]
    assert page.status_code == 200 and "<html" in page.text.lower()
