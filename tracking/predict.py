"""Classify image files with a logged model, preprocessed exactly as in training.

    python -m tracking.predict --run-id RUN_ID image.png [more.jpg ...]
    python -m tracking.predict --model-uri models:/resnet50-tuned/1 image.png

Prints one line per image: path, predicted class name, its probability. Each image is read
by `tracking.data.images.read_image` at the run's `image_size` param, the function that reads a
folder data set for training (EXIF orientation, 8-bit RGB, bilinear resize), then the batch
goes to the logged model (`mlflow.pyfunc`), which scales it itself and returns probabilities.
Class names come from the logged model's metadata (or the run's `class_names.json`), exactly
as training saw them. A missing or unreadable image, or an unknown run or model, exits with
status 2 and says which; an image much brighter or darker than the training images gets a
warning line.

The same model can be served over HTTP:
`mlflow models serve -m runs:/RUN_ID/model --env-manager local -p 5001`, then POST
`{"inputs": <uint8 array (N, S, S, 3) as nested lists>}` to `/invocations`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from tracking.cli import CommandParser, bad_input_exits, number, unquote
from tracking.data.images import read_image
from tracking.errors import UsageError
from tracking.evaluation.class_names import read_class_names


class PredictError(UsageError):
    """An image or the model cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Prediction:
    path: str
    label: int
    name: str
    probability: float


@dataclass(frozen=True)
class ModelSource:
    """Where the model is and how its training run prepared images."""

    model_uri: str
    image_size: int
    class_names: tuple[str, ...]
    run_id: str | None
    train_pixel_mean: float | None = None  # mean pixel value (0-255) of the training images
    # (lowest, highest) mean pixel value of one training image (runs from 2026-12-02 on)
    train_image_mean_range: tuple[float, float] | None = None


def read_images(paths: Sequence[str | Path], image_size: int) -> np.ndarray:
    """uint8 (N, image_size, image_size, 3), each file read as training reads it
    (`tracking.data.images.read_image`). Raises PredictError naming a missing or unreadable file."""
    images = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for i, path in enumerate(paths):
        if not Path(path).is_file():
            raise PredictError(f"no such image file: {path}")
        try:
            images[i] = read_image(path, image_size)
        except Exception as err:  # Pillow raises many types for a bad file
            raise PredictError(f"cannot read image {path}: {err}") from None
    return images


def resolve_model(run_id: str = "", model_uri: str = "", image_size: int | None = None
                  ) -> ModelSource:
    """The model URI plus the image size and class names of the run that logged it.

    `run_id` means `runs:/<run_id>/model`. For another URI (models:/name/1, a path) the run is
    found through the model's metadata; without one, `image_size` must be given. Class names,
    in label order: the model's metadata (`class_names`), else the run's `class_names.json`,
    else (runs logged before either existed) the run's comma-joined `class_names` param; with
    none of these, classes are shown by index.
    """
    client = mlflow.MlflowClient()
    uri = model_uri or f"runs:/{run_id}/model"
    if not run_id and uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/")[0]
    asked_run = bool(run_id)  # named by the user, so it must exist
    try:
        info = model_description(uri)
    except (MlflowException, OSError) as err:
        if not run_id:
            raise PredictError(f"cannot open model {uri}: {first_line(err)}") from None
        info = None  # an unknown run is reported below, by its id; a known one has no model
    run_id = run_id or (info.run_id if info else "") or ""
    params: dict[str, str] = {}
    if run_id:
        try:
            params = client.get_run(run_id).data.params
        except MlflowException as err:
            if asked_run or info is None:
                raise PredictError(f"unknown run {run_id} in {mlflow.get_tracking_uri()}: "
                                   f"{first_line(err)}") from None
            # the model outlived its run (deleted, garbage-collected, another store): its
            # own metadata (class names, the signature's image size) is enough
            run_id = ""
    takes = _signature_size(info) if info else None
    size = image_size or _int(params.get("image_size")) or takes
    if not size and info is None:
        raise PredictError(f"run {run_id} logged no model ({uri}): pick a training run")
    if not size:
        raise PredictError(f"the image size of {uri} is unknown: pass --image-size")
    if takes and size != takes:
        raise PredictError(f"{uri} takes {takes}x{takes} images: --image-size {size} does "
                           "not match")
    names = tuple(str(n) for n in ((info.metadata or {}).get("class_names", ()) if info else ()))
    if not names and run_id:
        names = read_class_names(run_id) or (
            tuple(params["class_names"].split(",")) if params.get("class_names") else ())
    mean, spread = params.get("train_pixel_mean"), params.get("train_image_mean_range")
    try:
        low, high = (float(v) for v in unquote(spread).split(",")) if spread else (None, None)
    except ValueError:
        low = high = None
    return ModelSource(uri, size, names, run_id or None,
                       float(unquote(mean)) if mean is not None else None,
                       (low, high) if low is not None else None)


def model_description(uri: str) -> mlflow.models.Model:
    """The MLmodel description of the model at `uri` (run_id, metadata, signature): through the
    tracking store's logged-model record, else read from the model's own MLmodel file (a
    folder copied from another store, or a registered version whose run was deleted).
    Raises MlflowException or OSError when neither can be read."""
    if uri.startswith("file://"):  # Model.load takes a plain path
        uri = urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
    try:
        return mlflow.models.Model.load(uri)
    except (MlflowException, OSError):
        info = mlflow.models.get_model_info(uri)
        return mlflow.models.Model(run_id=info.run_id, metadata=info.metadata,
                                   signature=info.signature)


def _signature_size(info: mlflow.models.Model) -> int | None:
    """S of the (-1, S, S, 3) tensor the model's signature takes, if it has one."""
    try:
        shape = info.signature.inputs.inputs[0].shape
    except (AttributeError, IndexError):
        return None
    return int(shape[1]) if shape and len(shape) == 4 and shape[1] == shape[2] else None


def predict(source: ModelSource, paths: Sequence[str | Path], model: object | None = None
            ) -> list[Prediction]:
    """Classify the images; `model` is a loaded pyfunc model (loaded here if None)."""
    batch = read_images(paths, source.image_size)
    for line in unlike_training(source, paths, batch):
        print(f"warning: {line}", file=sys.stderr)
    if model is None:
        try:
            model = mlflow.pyfunc.load_model(source.model_uri)
        except (MlflowException, OSError) as err:
            raise PredictError(f"cannot load model {source.model_uri}: {first_line(err)}") \
                from None
    probs = np.asarray(model.predict(batch.astype(np.float64)), dtype=np.float64)
    labels = probs.argmax(axis=1)
    out = []
    for path, label, row in zip(paths, labels, probs, strict=True):
        name = source.class_names[label] if label < len(source.class_names) else str(label)
        out.append(Prediction(str(path), int(label), name, float(row[label])))
    return out


BRIGHTNESS_TOLERANCE = 64.0  # of 255: a mean pixel value further off is unlike the training


def unlike_training(source: ModelSource, paths: Sequence[str | Path],
                    batch: np.ndarray) -> list[str]:
    """One line per image whose mean pixel value lies more than BRIGHTNESS_TOLERANCE / 2 (of
    255) outside the range of the training images' own (`train_image_mean_range`), saying
    whether it looks inverted (its negative would lie inside: e.g. dark strokes on light
    paper for a model trained on digits' light strokes on dark). A training image of any class
    is inside that range, however much the classes differ in brightness. Runs from before the
    range was logged compare with the overall mean, BRIGHTNESS_TOLERANCE either side. The
    model still predicts: the lines say why its answer may be wrong."""
    if source.train_image_mean_range is not None:
        low, high = source.train_image_mean_range
        margin = BRIGHTNESS_TOLERANCE / 2
        expected = f"the training images' {low:.0f} to {high:.0f}"
    elif source.train_pixel_mean is not None:
        low = high = source.train_pixel_mean
        margin = BRIGHTNESS_TOLERANCE
        expected = f"the training images' {low:.0f}"
    else:
        return []
    lines = []
    for path, image in zip(paths, batch, strict=True):
        mean = float(image.mean())
        if low - margin <= mean <= high + margin:
            continue
        inverted = low - margin <= 255 - mean <= high + margin
        lines.append(f"{path}: mean pixel value {mean:.0f} of 255, {expected}; the model "
                     "expects images like its training data"
                     + ("; this one looks inverted (light and dark swapped)" if inverted
                        else ""))
    return lines


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _int(value: str | None) -> int | None:
    try:
        return int(unquote(str(value)))
    except (TypeError, ValueError):
        return None


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m tracking.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", default="", help="the training run whose model to use")
    which.add_argument("--model-uri", default="",
                       help="any MLflow model URI (runs:/..., models:/name/version, a path)")
    p.add_argument("--image-size", type=number(int, "image size", positive=True), default=None,
                   help="override the run's image_size (needed when no run is known)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one `path<TAB>class<TAB>probability` line per image."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with bad_input_exits(parser):
        missing = [p for p in args.images if not Path(p).is_file()]
        if missing:
            raise PredictError(f"no such image file: {', '.join(missing)}")
        source = resolve_model(args.run_id, args.model_uri, args.image_size)
        with contextlib.redirect_stdout(sys.stderr):  # Keras's progress bar: not our output
            predictions = predict(source, args.images)
    for p in predictions:
        print(f"{p.path}\t{p.name}\t{p.probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
