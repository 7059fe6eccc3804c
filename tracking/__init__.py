"""Tracked training, evaluation and reporting of Keras image classifiers with MLflow."""
