"""Fashion-MNIST on a GPU with the tracked loop: throughput against the peer, accuracy, time.

Called by scripts/gpu_check.sh; see there. The peer's figures (plain `model.fit`, one H200,
JAX, fp32) are copied from the project's anchor measurements, 2026-11-28.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from tracking.config import Config
from tracking.train import train

# plain keras.applications + model.fit, images/s, H200, JAX, fp32
PEER_IMAGES_PER_SECOND = {
    128: {"vgg19": 39230.0, "resnet50": 10964.0, "densenet121": 4570.0},
    1024: {"vgg19": 73429.0, "resnet50": 41535.0, "densenet121": 27834.0},
}
GOALS = {"vgg19": 0.93, "densenet121": 0.93, "concat_cnn": 0.93, "resnet50": 0.92}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="concat_cnn,vgg19,resnet50,densenet121")
    p.add_argument("--data-dir", default="")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--output", default="gpu_check.json")
    a = p.parse_args()
    rows = []
    for name in a.models.split(","):
        t = time.perf_counter()
        r = train(Config(model=name, dataset="fashion_mnist", data_dir=a.data_dir,
                         batch_size=a.batch_size, epochs=a.epochs, experiment="gpu-check"))
        wall = time.perf_counter() - t
        ips = statistics.median(r["history"]["train_images_per_second"][1:])
        peer = PEER_IMAGES_PER_SECOND.get(a.batch_size, {}).get(name)
        row = {"model": name, "batch": a.batch_size, "images_per_second": round(ips, 1),
               "ratio_vs_peer": round(ips / peer, 3) if peer else None,
               "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"],
               "test_accuracy": round(r["test_accuracy"], 4), "goal": GOALS[name],
               "wall_seconds": round(wall, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(a.output, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
