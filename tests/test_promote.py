"""Champion and challenger in a real MLflow registry: runs with a real (tiny) logged Keras
model and a constructed predictions table, so the paired test's outcome is known."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

from tracking.comparison.promotion import CHALLENGER, CHAMPION, PromoteError, promote
from tracking.evaluation.outcomes import log_outcomes
from tracking.promote import main
from tracking.serving.pyfunc import log_classifier
from tracking.store.connect import ensure_experiment

N = 100
LABELS = np.arange(N) % 10
NAME = "digits-classifier"


def tiny_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def logged_run(wrong: range | list[int], digest: str = "split-a") -> str:
    """A finished run of data set `digits` with a logged model and a predictions table that
    is wrong exactly on the test images `wrong`."""
    predicted = LABELS.copy()
    predicted[list(wrong)] = (LABELS[list(wrong)] + 1) % 10
    probs = np.full((N, 10), 0.01)
    probs[np.arange(N), predicted] = 0.91
    with mlflow.start_run(experiment_id=ensure_experiment("promote")) as run:
        mlflow.log_params({"model": "tiny", "dataset": "digits"})
        mlflow.log_metric("test_accuracy", 1 - len(wrong) / N)
        log_outcomes(probs, LABELS, [str(i) for i in range(10)], test_digest=digest)
        log_classifier(tiny_model(), np.zeros((2, 8, 8, 3), np.uint8))
    return run.info.run_id


def aliases() -> dict[str, str]:
    return {k: str(v) for k, v in mlflow.MlflowClient().get_registered_model(NAME).aliases.items()}


def test_a_challenger_that_is_no_better_does_not_take_the_alias(mlflow_uri: str,
                                                                capsys) -> None:
    client = mlflow.MlflowClient()
    first = promote(logged_run(range(10)))
    assert (first.name, first.version, first.alias) == (NAME, "1", CHAMPION)
    assert "first champion" in first.reason and "90 of 100 test images right" in first.reason

    # two images better: McNemar's exact p = 0.5, not enough
    candidate = logged_run(range(8))
    assert main(["--run-id", candidate]) == 0
    assert "digits-classifier version 2: challenger: not shown better" in capsys.readouterr().out
    assert aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    run = client.get_run(candidate)
    assert run.data.tags["promotion"].startswith("challenger (digits-classifier version 2)")
    assert run.data.metrics["promotion_p_value"] == pytest.approx(0.5)
    assert run.data.metrics["promotion_difference"] == pytest.approx(0.02)
    assert run.data.metrics["promotion_ci_low"] <= 0  # the interval does not clear zero
    assert "promotion.json" in {a.path for a in client.list_artifacts(candidate)}
    assert client.get_model_version(NAME, "2").tags["promotion"].startswith("challenger")

    # ten images better, none worse: p = 2 / 2**10 and the interval above zero
    better = promote(logged_run([]))
    assert better.alias == CHAMPION and better.champion_version == "1"
    assert better.result.discordant == (10, 0)
    assert better.result.p_value == pytest.approx(2 / 2**10) and better.result.ci_low > 0
    assert aliases() == {CHAMPION: "3", CHALLENGER: "2"}


def test_mismatched_test_digests_are_refused(mlflow_uri: str, capsys) -> None:
    champion = promote(logged_run(range(10)))
    other = logged_run([], digest="split-b")
    with pytest.raises(SystemExit) as exit_info:
        main(["--run-id", other])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"run {other} was tested on split split-b, the champion of {NAME} (version 1) " \
           "on split-a: different test images cannot be compared" in err
    client = mlflow.MlflowClient()
    assert [str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == [
        champion.version]
    assert "promotion" not in client.get_run(other).data.tags
    # the candidate's own runs must share one split too
    with pytest.raises(PromoteError, match="different test splits"):
        promote(logged_run([]), [other])
    # a name the registry refuses is refused before anything is registered
    with pytest.raises(SystemExit) as exit_info:
        main(["--run-id", other, "--name", "bad/name:@x"])
    assert exit_info.value.code == 2
    assert "Invalid model name 'bad/name:@x'" in capsys.readouterr().err
    assert not client.search_registered_models("name = 'bad/name:@x'")


def test_a_first_candidate_at_chance_level_is_no_champion(mlflow_uri: str) -> None:
    # 12 of 100 right among 10 classes: exact binomial p = P(X >= 12), X ~ Bin(100, 0.1)
    guess = promote(logged_run(range(88)), name="other-classifier")
    assert guess.alias == CHALLENGER and "not better than chance" in guess.reason
    assert "12 of 100 test images right, chance 1/10, p = 0.3" in guess.reason
    model = mlflow.MlflowClient().get_registered_model("other-classifier")
    assert {k: str(v) for k, v in model.aliases.items()} == {CHALLENGER: "1"}


def test_a_champion_whose_run_was_deleted_is_said_and_can_be_replaced(
        mlflow_uri: str, tmp_path, capsys) -> None:
    """The champion's run deleted and garbage-collected (`mlflow gc`): the registered model
    still loads and predicts by its alias; promote says the champion's evidence is gone and
    what to do, and --replace-champion does it."""
    import subprocess
    import sys

    from PIL import Image

    from tracking import predict

    old = promote(logged_run(range(10)))
    client = mlflow.MlflowClient()
    client.delete_run(client.get_model_version(NAME, old.version).run_id)
    subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", mlflow_uri],
                   check=True, capture_output=True, timeout=300)

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    capsys.readouterr()
    assert predict.main(["--model-uri", f"models:/{NAME}@champion", str(image)]) == 0
    assert str(image) in capsys.readouterr().out  # the model outlived its run

    candidate = logged_run(range(5))
    with pytest.raises(SystemExit) as stop:
        main(["--run-id", candidate])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "has lost its evidence" in err and "--replace-champion" in err
    assert aliases() == {CHAMPION: old.version}  # nothing registered, nothing moved

    assert main(["--run-id", candidate, "--replace-champion"]) == 0
    out = capsys.readouterr().out
    assert f"champion: replaces version {old.version}, whose evidence is gone" in out
    assert aliases()[CHAMPION] != old.version


def test_replace_champion_with_a_candidate_at_chance_and_a_champion_promoted_again(
        mlflow_uri: str, capsys) -> None:
    client = mlflow.MlflowClient()
    first = logged_run(range(10))
    old = promote(first)
    again = promote(first)  # the champion's own run: nothing judged, no alias moved
    assert again.alias == CHAMPION and "already the champion" in again.reason
    assert aliases() == {CHAMPION: old.version}
    client.delete_run(first)  # a deleted run's predictions are not evidence
    weak = logged_run(range(88))  # 12 of 100 right: chance is 10 of 100
    assert main(["--run-id", weak, "--replace-champion"]) == 0
    out = capsys.readouterr().out
    assert "challenger" in out and "evidence is gone, but this one is not better than chance" \
        in out
    assert aliases()[CHAMPION] == old.version  # not replaced by a run at chance


def test_registered_names_derive_from_the_data_identity() -> None:
    from tracking.comparison.promotion import registry_name, registry_name_of

    assert registry_name("digits") == "digits-classifier"  # a built-in data set: its name
    assert registry_name("folder", "/data/pets", "3f2a9c1e77aa0011") == \
        "pets-3f2a9c1e-classifier"
    assert registry_name("folder", "/data/pets", "0000ffff77aa0011") != \
        registry_name("folder", "/data/pets", "3f2a9c1e77aa0011")  # same name, other files
    assert registry_name("folder", "/data/my photos (2024)", "abcdef0123456789") == \
        "my_photos_2024-abcdef01-classifier"
    assert registry_name("folder", "/data/pets/labels.csv", "abcdef0123456789") == \
        "labels-abcdef01-classifier"  # a manifest named itself
    assert registry_name("folder", "/data/pets") == "folder-classifier"  # a run before digests
    assert registry_name_of({"dataset": "'folder'", "data_source": "/d/x",
                             "data_digest": "12345678abcdabcd"}) == "x-12345678-classifier"
