"""Tune any registered model's training settings with Optuna; every trial an MLflow run.

    python -m tuning --model densenet121 --n-trials 20 --max-epochs 10
    python -m tuning --model vgg19 --dataset fashion_mnist --storage postgresql://...
    python -m tuning --model concat_cnn --pruner hyperband --seeds-per-trial 2

The search space is the model's own (`models.MODELS[name].search`, beside its recipe): epochs
(from 2 to --max-epochs), batch size, the peak learning rate and, where the model has them,
weight decay and shift strength. Trial 0 is 5 epochs at batch 128 with the recipe's other
values. --pruner median (default; small budgets), hyperband (large budgets) or none;
--seeds-per-trial K makes a trial's value, and what the pruner sees per epoch, the mean of K
seeds. `python -m tuning.optuna_resnet` is the same command with ResNet-50 as its default.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tuning import cli


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuning`: the tuning command for any registered model (--model)."""
    return cli.main(cli.build_parser("python -m tuning", __doc__, None), argv)


if __name__ == "__main__":
    sys.exit(main())
