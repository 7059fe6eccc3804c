"""Model registry: one name per architecture, one door in.

    from models import build_model, MODELS
    model = build_model("vgg19", input_shape=(32, 32, 3), num_classes=10, batch_norm=True)
    MODELS["vgg19"].recipe.batch_size       # the facts beside each factory (models.spec)

Every factory is pure: it takes the input shape, the class count and architecture options
and returns an uncompiled `keras.Model` named after its registry key. No data, no
compiling, no tracking in here. Adding a model is its factory file and one entry below; the
training defaults (`Recipe`), the tuning ranges (`SearchSpace`) and the smallest image size
sit in that entry, and every command (training, tuning, the study, the GPU check) reads them
from here. Figures behind each recipe are in docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Any

import keras

from models.applications import APPLICATIONS_MIN_SIZE, densenet121, resnet50
from models.concat_cnn import CONCAT_MIN_SIZE, concat_cnn
from models.registry import ModelRegistry, UnknownModel, model_label
from models.spec import ModelFactory, ModelSpec, Recipe, SearchSpace, options
from models.vgg19 import VGG19_MIN_SIZE, vgg19

# the accuracy evidence of mixed_bfloat16 (docs/benchmarks.md, "Precision" sections): the
# tracked loop on digits, 3 seeds per policy, test accuracy mean against float32's
BF16_DIGITS_EVIDENCE = "digits, 3 seeds, tracked loop, 2026-11-29: {} against float32's {}"
# where bfloat16 was faster: a 2-core AMD EPYC with AVX-512 BF16 and no AMX, plain fit at batch
# 64 (issue 27's table: VGG19 1.7-2.1x in two pairs, DenseNet-121 1.4x in one, ResNet-50
# 0.95-1.0x); on an AMX Xeon none was faster on every seed through the tracked loop
MODELS = ModelRegistry({
    # plain VGG19 with Adam at 1e-3 stays at chance: batch norm after every conv fixes it
    "vgg19": ModelSpec(
        vgg19, min_image_size=VGG19_MIN_SIZE,
        recipe=Recipe(optimizer="sgd", learning_rate=0.05, weight_decay=5e-4, epochs=10,
                      model_options=options(batch_norm=True, bn_momentum=0.9, dense_units=256,
                                            dropout=0.3)),
        search=SearchSpace(learning_rate=(5e-3, 2e-1), weight_decay=(1e-5, 1e-3)),
        accuracy_held=options(mixed_bfloat16=BF16_DIGITS_EVIDENCE.format(
            "0.9796 +/- 0.0080", "0.9750 +/- 0.0056")),
        faster_precision=options(cpu_avx512_bf16="mixed_bfloat16")),
    # mixed_bfloat16 lost 0.65 points of test accuracy on every seed (0.9648 against 0.9713):
    # no accuracy_held entry, so `auto` keeps it float32 on every kind of device
    "resnet50": ModelSpec(
        resnet50, min_image_size=APPLICATIONS_MIN_SIZE,
        recipe=Recipe(optimizer="adamw", learning_rate=1e-3, epochs=15)),
    "densenet121": ModelSpec(
        densenet121, min_image_size=APPLICATIONS_MIN_SIZE,
        recipe=Recipe(optimizer="adamw", learning_rate=1e-3, epochs=15),
        accuracy_held=options(mixed_bfloat16=BF16_DIGITS_EVIDENCE.format(
            "0.9889 +/- 0.0083", "0.9907 +/- 0.0042")),
        faster_precision=options(cpu_avx512_bf16="mixed_bfloat16")),
    # mixed_bfloat16 1.41x faster on every seed on an AMX Xeon (2026-12-02), one machine of
    # the kind: its calibration, not the registry, picks it there
    "concat_cnn": ModelSpec(
        concat_cnn, min_image_size=CONCAT_MIN_SIZE,
        recipe=Recipe(optimizer="adamw", learning_rate=2e-3, epochs=15),
        accuracy_held=options(mixed_bfloat16=BF16_DIGITS_EVIDENCE.replace(
            "2026-11-29", "2026-12-02").format("0.9944 +/- 0.0028", "0.9926 +/- 0.0016"))),
})


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **options: Any
) -> keras.Model:
    """Build the registered model `name` for `input_shape` images and `num_classes` classes.

    `options` go to the factory (architecture switches such as `batch_norm` or `dropout`).
    Raises ValueError for an unknown name, listing the valid ones.
    """
    try:
        spec = MODELS[name]
    except UnknownModel as err:
        raise ValueError(str(err)) from None
    return spec.factory(input_shape=tuple(input_shape), classes=num_classes, **options)


__all__ = ["MODELS", "ModelFactory", "ModelRegistry", "ModelSpec", "Recipe", "SearchSpace",
           "UnknownModel", "build_model", "model_label",
           "concat_cnn", "densenet121", "resnet50", "vgg19"]
