"""The logged model in use: `python -m tracking.predict` on image files, and
`mlflow models serve` answering over HTTP exactly as the model does in process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from PIL import Image
from processes import free_port, mlflow_cli, running

from tracking import predict
from tracking.config import Config
from tracking.data.dataset import load_dataset, to_rgb_size

# one worker trains the module's model once for every test here (pytest-xdist --dist loadgroup)
pytestmark = pytest.mark.xdist_group("serving")

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One tiny tracked run in a store of this module's own; yields its results and store."""
    from tracking.training.loop import train

    folder = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            results = train(Config(model="concat_cnn", dataset="digits", epochs=2,
                                   batch_size=32, limit=300, experiment="serving"))
            yield {"results": results, "uri": uri, "folder": folder}
        finally:
            mlflow.set_tracking_uri(None)


def digit_files(folder: Path, count: int = 6) -> tuple[list[Path], np.ndarray]:
    """Raw 8x8 scikit-learn digits saved as grayscale PNGs, and what training would feed the
    model for them (load_digits' scaling, then to_rgb_size)."""
    from sklearn.datasets import load_digits

    raw = np.round(load_digits().images[:count] * (255.0 / 16.0)).astype(np.uint8)
    paths = []
    for i, image in enumerate(raw):
        path = folder / f"digit_{i}.png"
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
    return paths, to_rgb_size(raw, 32)


def test_predict_cli_matches_the_model_on_training_preprocessing(trained: dict, tmp_path: Path,
                                                                 capsys) -> None:
    run_id = trained["results"]["run_id"]
    paths, expected_input = digit_files(tmp_path)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    expected = np.asarray(model.predict(expected_input.astype(np.float64)))
    capsys.readouterr()
    assert predict.main(["--run-id", run_id, *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(paths)
    for line, path, probs in zip(lines, paths, expected, strict=True):
        shown_path, name, probability = line.split("\t")
        assert shown_path == str(path)
        assert name == str(int(probs.argmax()))  # digits' class names are "0".."9"
        assert float(probability) == pytest.approx(float(probs.max()), abs=1e-4)

    # the same through the model URI, with an RGB JPEG of another size
    big = tmp_path / "digit_big.jpg"
    Image.open(paths[0]).convert("RGB").resize((50, 50)).save(big, quality=95)
    source = predict.resolve_model(model_uri=f"runs:/{run_id}/model")
    assert source.image_size == 32 and source.class_names == tuple(str(i) for i in range(10))
    assert predict.read_images([big], 32).shape == (1, 32, 32, 3)
    assert predict.predict(source, [paths[0]], model=model)[0].label == int(expected[0].argmax())


@pytest.mark.parametrize("args, message", [
    (["--run-id", "RUN", "missing.png"], "no such image file: missing.png"),
    (["--run-id", "0123456789abcdef0123456789abcdef", "IMAGE"], "unknown run 0123456789abcdef"),
    (["--run-id", "RUN", "NOT_AN_IMAGE"], "cannot read image"),
    (["--run-id", "RUN", "--image-size", "-5", "IMAGE"], "image size must be a positive"),
    (["--run-id", "RUN", "--image-size", "16", "IMAGE"],
     "takes 32x32 images: --image-size 16 does not match"),
    (["--run-id", "NO_MODEL", "IMAGE"], "logged no model"),
])
def test_predict_errors_exit_2(trained: dict, tmp_path: Path, capsys, args, message) -> None:
    image = digit_files(tmp_path, 1)[0][0]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    no_model = mlflow.MlflowClient().create_run(
        mlflow.get_experiment_by_name("serving").experiment_id).info.run_id
    argv = [a.replace("NO_MODEL", no_model).replace("RUN", trained["results"]["run_id"])
            .replace("NOT_AN_IMAGE", str(bad)).replace("IMAGE", str(image)) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_mlflow_models_serve_answers_like_the_model(trained: dict, tmp_path: Path) -> None:
    run_id = trained["results"]["run_id"]
    x = load_dataset("digits", limit=300).x_test[:8]  # the run's own test split, uint8
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    expected = np.asarray(pyfunc.predict(x.astype(np.float64)))
    with pytest.raises(mlflow.exceptions.MlflowException, match="multiply them by 255"):
        pyfunc.predict(x / 255.0)  # in process: the same refusal as over HTTP
    assert np.asarray(pyfunc.predict(np.zeros((0, 32, 32, 3)))).shape == (0, 10)  # no images
    port = free_port()
    cmd = [*mlflow_cli(), "models", "serve", "-m", f"runs:/{run_id}/model", "--env-manager",
           "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = {"MLFLOW_TRACKING_URI": trained["uri"], "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    with running(cmd, tmp_path / "serve.log", env=env, cwd=trained["folder"],
                 ready_url=f"http://127.0.0.1:{port}/ping", timeout=180):
        answer = requests.post(f"http://127.0.0.1:{port}/invocations",
                               json={"inputs": x.tolist()}, timeout=120)
        assert answer.status_code == 200, answer.text[:2000]
        served = np.asarray(answer.json()["predictions"], dtype=np.float64)
        bad = requests.post(f"http://127.0.0.1:{port}/invocations",
                            json={"inputs": [[1, 2, 3]]}, timeout=60)
        forms = {form: requests.post(f"http://127.0.0.1:{port}/invocations", json=body,
                                     timeout=120)
                 for form, body in {
                     "instances": {"instances": x.tolist()},
                     "scaled floats": {"inputs": (x / 255.0).tolist()},
                     "out of range": {"inputs": (x.astype(int) + 300).tolist()},
                     "no batch axis": {"inputs": x[0].tolist()},
                     "dataframe_split": {"dataframe_split": {"data": x.tolist()}},
                 }.items()}
    assert forms["instances"].status_code == 200
    np.testing.assert_allclose(np.asarray(forms["instances"].json()["predictions"]), expected,
                               atol=1e-5)
    for form in ("scaled floats", "out of range", "no batch axis", "dataframe_split"):
        assert 400 <= forms[form].status_code < 500, (form, forms[form].text[:500])
    assert "multiply them by 255" in forms["scaled floats"].text
    assert "pixel values 0-255" in forms["out of range"].text
    assert served.shape == expected.shape == (8, 10)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_array_equal(served.argmax(axis=1), expected.argmax(axis=1))
    assert bad.status_code >= 400  # a wrongly shaped batch is refused, not guessed at


def test_predict_warns_when_an_image_is_unlike_the_training_data(trained: dict, tmp_path: Path,
                                                                 capsys) -> None:
    """Digits are light strokes on a dark ground: a dark-on-light scan gets a warning."""
    run_id = trained["results"]["run_id"]
    params = mlflow.MlflowClient().get_run(run_id).data.params
    assert 0 < float(params["train_pixel_mean"]) < 100  # mostly dark
    paths, _ = digit_files(tmp_path, count=2)
    inverted = tmp_path / "inverted.png"
    Image.fromarray(255 - np.asarray(Image.open(paths[0]))).save(inverted)
    capsys.readouterr()
    assert predict.main(["--run-id", run_id, str(paths[1]), str(inverted)]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2  # both are still classified
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(inverted) in warnings[0]
    assert "looks inverted" in warnings[0]


def test_training_images_of_a_dark_and_a_light_class_get_no_warning(
        mlflow_uri: str, tmp_path: Path, capsys) -> None:
    """Classes that differ in brightness: every training image lies inside the training
    images' own range of brightness, so none is called unlike the training data."""
    from tracking.training.loop import train

    rng = np.random.default_rng(0)
    for name, (low, high) in {"dark": (0, 40), "light": (215, 256)}.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(low, high, (16, 16, 3), dtype=np.uint8)).save(
                tmp_path / "data" / name / f"{i}.png")
    results = train(Config(model="concat_cnn", dataset="folder",
                           data_dir=str(tmp_path / "data"), image_size=16, epochs=1,
                           batch_size=8, experiment="brightness"))
    params = mlflow.MlflowClient().get_run(results["run_id"]).data.params
    low, high = (float(v) for v in params["train_image_mean_range"].split(","))
    assert low < 40 and high > 215  # both classes inside it
    files = [tmp_path / "data" / c / f"{i}.png" for c in ("dark", "light") for i in range(12)]
    capsys.readouterr()
    assert predict.main(["--run-id", results["run_id"], *map(str, files)]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == len(files)
    assert "warning:" not in err  # the old rule warned on every one (mean 20 or 235 vs ~128)
