"""Every registered model builds, names itself after its key, and gives finite class scores."""

from __future__ import annotations

import numpy as np
import pytest

from models import MODELS, build_model
from tracking.recipes import RECIPES


@pytest.mark.jax_smoke
@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_model_builds_and_predicts(name: str) -> None:
    model = build_model(name, (32, 32, 3), 4, **RECIPES[name].model_options)
    assert model.name == name
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    out = np.asarray(model(x, training=False))
    assert out.shape == (2, 4)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)


def test_every_model_has_a_recipe() -> None:
    assert set(RECIPES) == set(MODELS)


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


def test_applications_models_use_short_batchnorm_memory() -> None:
    model = build_model("resnet50", (32, 32, 3), 10)
    momenta = {layer.momentum for layer in model._flatten_layers()
               if layer.__class__.__name__ == "BatchNormalization"}
    assert momenta == {0.9}
