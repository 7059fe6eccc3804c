"""Fashion-MNIST on a GPU with the suite's own tracked loop: speed against the peer, accuracy
against the goals, time against the 10-minute budget. Called by scripts/gpu_check.sh.

    python scripts/gpu_check.py [--models concat_cnn,vgg19,resnet50,densenet121]
        [--batch-size auto|N] [--epochs auto|N] [--limit N] [--output gpu_check.json]
        [--set MODEL.FIELD=VALUE ...]    # try a recipe variant, e.g. concat_cnn.shift=0

Each model trains with its recipe (or the given batch size / epochs) through `train()`, all
tracking on. Per model: steady images/s (median of epochs 2..n), ratio against the peer's
plain `model.fit` at the same batch size (anchors, H200, JAX, fp32), first-epoch seconds
(compilation included), epochs, test accuracy against its goal, wall time. The JSON file is
rewritten after every model, so a run cut short still reports the models it finished. The
models go fastest first for the same reason.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import keras  # noqa: E402

from models import MODELS, Recipe, options  # noqa: E402
from tracking.cli import CommandParser, auto_or_number  # noqa: E402
from tracking.config import Config, load_for  # noqa: E402
from tracking.data.dataset import Dataset  # noqa: E402
from tracking.training.loop import train  # noqa: E402

# plain keras.applications + model.fit, images/s, one H200, JAX 0.11.2, fp32, 2026-11-28
# (shared/anchors/README.md)
PEER_IMAGES_PER_SECOND = {
    128: {"vgg19": 39230.0, "resnet50": 10964.0, "densenet121": 4570.0},
    1024: {"vgg19": 73429.0, "resnet50": 41535.0, "densenet121": 27834.0},
}
# Fashion-MNIST test accuracy goals (a model without one: any accuracy meets it)
GOALS = {"vgg19": 0.93, "densenet121": 0.93, "concat_cnn": 0.93, "resnet50": 0.92}
BUDGET_SECONDS = 600  # the four models' training, compilation included


def recipe_variants(settings: list[str]) -> tuple[dict[str, Recipe], dict[str, dict]]:
    """`MODEL.FIELD=VALUE` -> (the recipe of each changed MODEL with FIELD replaced, `arch_X`
    setting the model option X; what was changed, per model, for the report). The registry
    itself is left as it is."""
    recipes: dict[str, Recipe] = {}
    changed: dict[str, dict[str, object]] = {}
    for item in settings:
        target, _, text = item.partition("=")
        model, _, field = target.partition(".")
        if model not in MODELS or not field or not text:
            raise SystemExit(f"--set {item!r}: expected MODEL.FIELD=VALUE, MODEL in "
                             f"{sorted(MODELS)}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word, e.g. an optimizer name
        recipe = recipes.get(model, MODELS[model].recipe)
        if field.startswith("arch_"):
            recipe = replace(recipe, model_options=options(**{**recipe.model_options,
                                                              field[5:]: value}))
        elif hasattr(recipe, field):
            recipe = replace(recipe, **{field: value})
        else:
            raise SystemExit(f"--set {item!r}: a recipe has no field {field!r}")
        recipes[model] = recipe
        changed.setdefault(model, {})[field] = value
    return recipes, changed


def check_model(name: str, data: Dataset, args: argparse.Namespace,
                recipe: Recipe | None) -> dict:
    t = time.perf_counter()
    r = train(Config(model=name, dataset="fashion_mnist", data_dir=args.data_dir,
                     batch_size=args.batch_size, epochs=args.epochs, limit=args.limit,
                     experiment="gpu-check", recipe=recipe), data)
    wall = time.perf_counter() - t
    h = r["history"]
    batch = r["config"].batch_size
    ips = statistics.median(h["train_images_per_second"][1:] or h["train_images_per_second"])
    peer = PEER_IMAGES_PER_SECOND.get(batch, {}).get(name)
    return {
        "model": name, "batch": batch, "images_per_second": round(ips, 1),
        "peer_images_per_second": peer,
        "ratio_vs_peer": round(ips / peer, 3) if peer else None,
        "first_epoch_seconds": round(h["epoch_seconds"][0], 1),
        "fit_seconds": round(r["timings"]["fit_seconds"], 1),
        "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"],
        "test_accuracy": round(r["test_accuracy"], 4), "goal": GOALS.get(name),
        "goal_met": r["test_accuracy"] >= GOALS.get(name, 0.0), "wall_seconds": round(wall, 1),
    }


def main() -> int:
    p = CommandParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="concat_cnn,vgg19,resnet50,densenet121",
                   help=f"comma-separated, of {', '.join(MODELS)} (fastest first)")
    p.add_argument("--data-dir", default="")
    p.add_argument("--batch-size", type=auto_or_number(int, "batch size"), default=None)
    p.add_argument("--epochs", type=auto_or_number(int, "epochs"), default=None)
    p.add_argument("--limit", type=int, default=0, help="images kept before splitting (0 = all)")
    p.add_argument("--output", default="gpu_check.json")
    p.add_argument("--set", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                   help="recipe variant (repeatable), e.g. concat_cnn.shift=0 "
                        "resnet50.batch_size=256 concat_cnn.arch_dropout=0.2")
    a = p.parse_args()
    recipes, changed = recipe_variants(a.set)

    t0 = time.perf_counter()
    data = load_for(Config(model="concat_cnn", dataset="fashion_mnist", data_dir=a.data_dir,
                           limit=a.limit))
    print(f"backend={keras.backend.backend()} train={len(data.y_train)} "
          f"val={len(data.y_val)} test={len(data.y_test)} "
          f"load={time.perf_counter() - t0:.1f}s", flush=True)
    rows: list[dict] = []
    for name in a.models.split(","):
        rows.append({**check_model(name.strip(), data, a, recipes.get(name.strip())),
                     "recipe_changes": changed.get(name.strip(), {})})
        print(json.dumps(rows[-1]), flush=True)
        Path(a.output).write_text(json.dumps(rows, indent=1))
    fit_total = sum(r["fit_seconds"] for r in rows)
    print(f"\n{'model':<12} {'batch':>5} {'img/s':>9} {'vs peer':>7} {'1st ep s':>8} "
          f"{'epochs':>6} {'test acc':>8} {'goal':>5} {'wall s':>7}")
    for r in rows:
        ratio = f"{r['ratio_vs_peer']:.3f}" if r["ratio_vs_peer"] else "-"
        print(f"{r['model']:<12} {r['batch']:>5} {r['images_per_second']:>9.0f} {ratio:>7} "
              f"{r['first_epoch_seconds']:>8.1f} {r['epochs_run']:>6} "
              f"{r['test_accuracy']:>8.4f} {'met' if r['goal_met'] else 'MISS':>5} "
              f"{r['wall_seconds']:>7.1f}")
    print(f"training (fit, compilation included) of all models: {fit_total:.0f} s "
          f"(budget {BUDGET_SECONDS} s); whole check {time.perf_counter() - t0:.0f} s")
    return 0 if all(r["goal_met"] for r in rows) and fit_total <= BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
