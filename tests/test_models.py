"""Every registered model builds, names itself after its key, and gives finite class scores."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

from models import MODELS, ModelSpec, Recipe, build_model
from tracking.config import Config, ConfigError
from tracking.train import main as train_main
from tracking.training.loop import train
from tuning.config import TuneConfig, TuneError
from tuning.study import run_tuning_study


@pytest.mark.jax_smoke
@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_model_builds_and_predicts(name: str) -> None:
    model = build_model(name, (32, 32, 3), 4, **MODELS[name].recipe.model_options)
    assert model.name == name
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    out = np.asarray(model(x, training=False))
    assert out.shape == (2, 4)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)


def test_every_model_has_a_recipe() -> None:
    for name, spec in MODELS.items():
        assert spec.recipe.epochs > 0 and spec.recipe.batch_size > 0, name
        assert spec.min_image_size >= 8, name


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="vgg19.*resnet50.*densenet121.*concat_cnn"):
        build_model("alexnet", (32, 32, 3), 10)


def test_vgg19_has_sixteen_convolutions_in_five_blocks() -> None:
    model = build_model("vgg19", (32, 32, 3), 10)
    convs = [layer.name for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 16
    assert convs[0] == "block1_conv1" and convs[-1] == "block5_conv4"


def test_vgg19_applications_style_options(tmp_path) -> None:
    headless = build_model("vgg19", (32, 32, 3), 10, include_top=False, pooling="avg")
    assert headless.output_shape == (None, 512)
    feature_map = build_model("vgg19", (64, 64, 3), 10, include_top=False)
    assert feature_map.output_shape == (None, 2, 2, 512)
    # weights: a local file round-trips; anything else is refused, nothing is downloaded
    path = tmp_path / "vgg19.weights.h5"
    small = build_model("vgg19", (32, 32, 3), 3, dense_units=16, batch_norm=True)
    small.save_weights(path)
    again = build_model("vgg19", (32, 32, 3), 3, dense_units=16, batch_norm=True,
                        weights=str(path))
    for a, b in zip(small.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weights must be None or the path"):
        build_model("vgg19", (32, 32, 3), 10, weights="imagenet")
    with pytest.raises(ValueError, match="pooling"):
        build_model("vgg19", (32, 32, 3), 10, include_top=False, pooling="median")
    with pytest.raises(ValueError, match="at least 32x32"):
        build_model("vgg19", (16, 16, 3), 10)


def test_concat_cnn_structure() -> None:
    model = build_model("concat_cnn", (32, 32, 3), 10)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds[1] == "MaxPooling2D"  # entry
    assert "Concatenate" in kinds and "AveragePooling2D" in kinds
    assert "BatchNormalization" in kinds
    assert kinds.index("Flatten") - 1 == max(i for i, k in enumerate(kinds) if k == "MaxPooling2D")
    assert kinds.count("Dense") == 3 and kinds.count("Dropout") == 2
    assert model.get_layer("entry_maxpool").output.shape == (None, 16, 16, 3)
    full = build_model("concat_cnn", (32, 32, 3), 10, entry_pool_strides=1)
    assert full.get_layer("entry_maxpool").output.shape == (None, 32, 32, 3)
    assert full.get_layer("flatten").output.shape[1] == 4 * model.get_layer(
        "flatten").output.shape[1]
    with pytest.raises(ValueError, match="entry_pool_strides"):
        build_model("concat_cnn", (32, 32, 3), 10, entry_pool_strides=3)


def test_concat_cnn_trains_at_its_smallest_size_and_refuses_one_below() -> None:
    """CONCAT_MIN_SIZE is the true minimum: the default (entry stride 2) builds and trains a
    step there (and so does stride 1); one pixel less is refused before any model is built."""
    from models.concat_cnn import CONCAT_MIN_SIZE

    size = CONCAT_MIN_SIZE
    x = np.random.default_rng(0).random((4, size, size, 3)).astype("float32")
    for strides in (2, 1):
        model = build_model("concat_cnn", (size, size, 3), 3, entry_pool_strides=strides)
        assert model.get_layer("exit_maxpool").output.shape[1] >= 1
        model.compile("adam", "sparse_categorical_crossentropy")
        loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
        assert np.isfinite(loss)
    assert MODELS["concat_cnn"].min_image_size == CONCAT_MIN_SIZE
    with pytest.raises(ConfigError, match=f"concat_cnn needs image_size >= {size}, "
                                          f"got {size - 1}"):
        Config(model="concat_cnn", image_size=size - 1)
    with pytest.raises(ValueError, match=f"at least {size}x{size}"):
        build_model("concat_cnn", (size - 1, size - 1, 3), 3)


def test_applications_models_use_short_batchnorm_memory() -> None:
    model = build_model("resnet50", (32, 32, 3), 10)
    momenta = {layer.momentum for layer in model._flatten_layers()
               if layer.__class__.__name__ == "BatchNormalization"}
    assert momenta == {0.9}


def tiny_cnn(input_shape: tuple[int, int, int] | None = None, classes: int = 10) -> keras.Model:
    """A fifth model, as a user would add one: a factory and nothing else."""
    inputs = keras.Input(input_shape or (16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def test_a_fifth_model_is_its_factory_and_one_registry_entry(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Training, bad-input checks and tuning all read the registry entry, nothing else."""
    monkeypatch.setitem(MODELS, "tiny_cnn", ModelSpec(
        tiny_cnn, Recipe(epochs=2, batch_size=32, learning_rate=3e-3), min_image_size=16))
    results = train(Config(model="tiny_cnn", limit=200, image_size=16, experiment="fifth"))
    run = mlflow.MlflowClient().get_run(results["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["effective_epochs"] == "2"
    assert run.data.params["effective_batch_size"] == "32"
    assert "test_accuracy" in run.data.metrics

    with pytest.raises(SystemExit) as exit_info:  # below the entry's smallest size
        train_main(["--model", "tiny_cnn", "--image-size", "8", "--experiment", "fifth"])
    assert exit_info.value.code == 2
    assert "tiny_cnn needs image_size >= 16, got 8" in capsys.readouterr().err

    with pytest.raises(TuneError, match="registered in this process only"):
        run_tuning_study(TuneConfig(model="tiny_cnn", n_trials=1, experiment="fifth-tuning"))
    summary = run_tuning_study(TuneConfig(model="tiny_cnn", n_trials=1, max_epochs=1, limit=120,
                                          experiment="fifth-tuning", trial_process=False))
    assert summary["trials_complete"] == 1
    # registered as tiny_cnn-tuned exactly when its one trial beats chance
    registered = summary["registered_model"] is not None
    assert registered == (summary["chance_p_value"] < 0.05)
    assert not registered or summary["registered_model"].startswith("tiny_cnn-tuned/")
    assert len(mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("fifth").experiment_id])) == 1  # the bad one never ran
