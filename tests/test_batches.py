"""Equal-shaped batches: full training batches in a per-epoch order, padded prediction, and
(under JAX) one compilation of each step for a whole tracked run."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tracking.config import Config
from tracking.data.batches import EpochBatches, Padded, predict_padded
from tracking.evaluation.evaluate import crossentropy


def labelled(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n, dtype=np.int64).reshape(n, 1)  # each image is its own index
    return x, np.arange(n) % 10


def epoch_rows(batches: EpochBatches) -> list[np.ndarray]:
    return [batches[i][0][:, 0] for i in range(len(batches))]


def test_training_batches_are_full_and_distinct_within_an_epoch() -> None:
    x, y = labelled(650)
    batches = EpochBatches(x, y, batch_size=64, seed=3)
    assert len(batches) == 10 and batches.images_per_epoch == 640
    rows = epoch_rows(batches)
    assert all(len(r) == 64 for r in rows)
    seen = np.concatenate(rows)
    assert len(np.unique(seen)) == 640  # no image twice in an epoch
    for i in range(len(batches)):  # labels travel with their images
        bx, by = batches[i]
        assert np.array_equal(by, bx[:, 0] % 10)


def test_order_depends_on_seed_and_epoch_only_so_resume_sees_the_same_batches() -> None:
    x, y = labelled(300)
    straight = EpochBatches(x, y, 32, seed=7)
    first = epoch_rows(straight)
    straight.on_epoch_end()
    second = epoch_rows(straight)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    np.random.seed(123)  # the global random state plays no part
    resumed = EpochBatches(x, y, 32, seed=7, first_epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(second, epoch_rows(resumed), strict=True))
    other = EpochBatches(x, y, 32, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(first, epoch_rows(other), strict=True))


def test_fewer_images_than_a_batch_make_one_batch_of_all() -> None:
    x, y = labelled(5)
    batches = EpochBatches(x, y, 64, seed=0)
    assert len(batches) == 1 and batches.images_per_epoch == 5
    assert sorted(batches[0][0][:, 0]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="labels"):
        EpochBatches(x, y[:4], 64, seed=0)


def test_padded_prediction_equals_plain_prediction() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(70, 3)).astype("float32")
    plain = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    padded = predict_padded(model, x, batch_size=32)
    assert padded.shape == (70, 4) and padded.dtype == np.float64
    np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-6)
    assert len(Padded(x, 32).x) == 96 and Padded(x[:64], 32).x is not None


def test_crossentropy_matches_keras() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), size=40)
    y = rng.integers(0, 5, size=40)
    expected = keras.ops.convert_to_numpy(keras.losses.SparseCategoricalCrossentropy()(
        y, probs.astype("float32")))
    assert crossentropy(probs, y) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.jax_smoke
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compilations are counted by JAX")
def test_a_tracked_run_compiles_each_step_once_with_augmentation(mlflow_uri: str) -> None:
    import jax.monitoring

    from tracking.training.loop import train

    compiled: list[str] = []

    def on_event(event: str, seconds: float, **kwargs: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(str(kwargs.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        # 300 digits: 192 train (4 full batches of 40 and 32 left over), 48 validation, 60 test
        # with the recipe's random shifts, which Keras marks as unfit for XLA
        results = train(Config(model="concat_cnn", dataset="digits", epochs=3, batch_size=40,
                               limit=300, experiment="compiles"))
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert results["epochs_run"] == 3
    assert compiled.count("jit(train_step)") == 1, compiled
    assert compiled.count("jit(predict_step)") == 1, compiled  # validation, test, signature
    assert "jit(test_step)" not in compiled


@pytest.mark.jax_smoke
def test_models_with_random_shifts_compile_under_jax_also_after_reloading(tmp_path) -> None:
    from tracking.data.dataset import load_dataset
    from tracking.training.classifier import allow_jit, build_classifier

    config = Config(model="concat_cnn", dataset="digits", augment=True)
    data = load_dataset("digits", None, 32, 0.2, 0.2, 0, limit=100)
    model = build_classifier(config, data)
    model.compile("adam", "sparse_categorical_crossentropy")
    jax = keras.backend.backend() == "jax"
    assert model.get_layer("augment").get_layer("random_shift") is not None
    assert model.jit_compile is jax  # False on TensorFlow/CPU, where XLA stays off
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert allow_jit(reloaded).jit_compile is jax
