"""Tune ResNet-50's epochs, batch size and learning rate with Optuna; every trial an MLflow run.

In the original comparison ResNet-50 came last (test accuracy 0.95 against 0.98 to 0.99 for
the others) and its epochs and batch size were the suspects. This study answers that:

    python -m tuning.optuna_resnet --n-trials 20 --max-epochs 10      # digits, files in the cwd
    python -m tuning.optuna_resnet --study-name resnet50-digits ...   # resume (same total)
    mlflow run . -e tune -P n_trials=20 --experiment-name resnet50-tuning

Tuned: epochs (2 to --max-epochs), batch size (16 to 512, powers of two) and the peak learning
rate (1e-4 to 1e-2, log-uniform). Trial 0 is the original setting: 5 epochs at batch 128 with
the recipe's learning rate. Validation accuracy is the objective; the test split is scored
once at the end, for the best trial's model and the baseline's. Any other registered model:
`python -m tuning --model NAME`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tuning import cli

MODEL = "resnet50"


def build_parser() -> argparse.ArgumentParser:
    """The tuning flags (`tuning.cli`), ResNet-50 as the default --model."""
    return cli.build_parser("python -m tuning.optuna_resnet", __doc__, MODEL)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuning.optuna_resnet`: the tuning command with ResNet-50 as its model."""
    return cli.main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
