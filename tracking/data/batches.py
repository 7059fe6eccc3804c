"""Batches of one shape, so that a compiled step is compiled once.

Under JAX (and any backend that compiles per input shape) a ragged last batch costs a second
compilation of the train step, and a ragged validation or test batch one more of the
evaluation step: on a GPU each is tens of seconds for ResNet-50 or DenseNet-121, more than
the epochs themselves at 32x32. So training sees only full batches (the few left-over images
change from epoch to epoch, like PyTorch's `drop_last`), and every prediction pass pads its
input to a whole number of batches and drops the padding's outputs: validation, test
evaluation and the model signature then share one compiled predict step.

Both read their images one batch at a time (`x[rows]`, `x[start:stop]`), so the arrays may be
memory-mapped files larger than memory (folder data sets, `tracking.data.dataset`): only the batch
in hand is copied into memory.
"""

from __future__ import annotations

import keras
import numpy as np

PREDICT_BATCH = 256  # one batch size for every prediction pass: one compilation


def full_batches(images: int, batch_size: int) -> int:
    """Training steps per epoch: full batches only, or one batch when there are fewer images."""
    return max(images // batch_size, 1)


class EpochBatches(keras.utils.PyDataset):
    """Full training batches of (x, y), in an order drawn from (seed, epoch).

    The order depends on the epoch number alone, not on a global random state, so a run
    resumed at epoch k sees exactly the batches that the uninterrupted run would have seen.
    When there are fewer images than one batch, the one batch is all of them.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                 first_epoch: int = 0) -> None:
        # one worker, in this thread: a batch is one indexing of x (a memory-mapped x reads
        # those rows only), and on_epoch_end runs exactly once per epoch, as resuming needs
        super().__init__()
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"need as many labels as images, and some: {len(x)}, {len(y)}")
        self.x, self.y = x, np.asarray(y, dtype=np.int32)  # what every backend takes
        self.batch_size = min(batch_size, len(y))
        self.seed = seed
        self.epoch = first_epoch
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.y))

    @property
    def images_per_epoch(self) -> int:
        return len(self) * self.batch_size

    def __len__(self) -> int:
        return full_batches(len(self.y), self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # sorted indices read the arrays front to back; the batch's order does not matter
        rows = np.sort(self._order[index * self.batch_size:(index + 1) * self.batch_size])
        return self.x[rows], self.y[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation()


def predict_padded(model: keras.Model, x: np.ndarray,
                   batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """`model.predict(x)` as float64, run in batches of exactly `batch_size` rows."""
    return Padded(x, batch_size).predict(model)


class Padded(keras.utils.PyDataset):
    """Images for repeated prediction passes in batches of exactly `batch_size` rows: the
    last batch is topped up with zero images as it is read (`x` is the padded view), so the
    array itself is never copied whole."""

    def __init__(self, x: np.ndarray, batch_size: int = PREDICT_BATCH) -> None:
        super().__init__()
        self.size = len(x)
        self.batch_size = batch_size
        self.x = PaddedRows(x, -(-len(x) // batch_size) * batch_size)

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> np.ndarray:
        return self.x[index * self.batch_size:(index + 1) * self.batch_size]

    def predict(self, model: keras.Model) -> np.ndarray:
        out = model.predict(self, verbose=0)  # NumPy
        return np.asarray(out[:self.size], dtype=np.float64)


class PaddedRows:
    """The rows of `x` followed by zero rows, `length` in all; a slice reads only its rows."""

    def __init__(self, x: np.ndarray, length: int) -> None:
        self.images, self.length = x, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.length)
        batch = np.asarray(self.images[start:min(stop, len(self.images))])
        missing = max(stop - start, 0) - len(batch)
        if missing <= 0:
            return batch
        return np.concatenate([batch, np.zeros((missing, *batch.shape[1:]), batch.dtype)])
