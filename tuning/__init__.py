"""Optuna studies over the registered models (python -m tuning, python -m tuning.optuna_resnet)."""

import tracking  # noqa: F401 - quiets TensorFlow before tuning.cli imports the models' Keras
