"""The report's verdict tables: every pair of models judged on the same test images, each
model at its recipe against it tuned (a fair study), and accuracy against cost with the
dominated models marked; and the cells every table of the report shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracking.comparison.groups import ModelGroup, TuningSummary
from tracking.comparison.paired import ALPHA, BOOTSTRAP_REPLICATES, CONFIDENCE, POWER
from tracking.comparison.verdicts import (
    PairVerdict,
    corrected,
    dominators,
    judge_pair,
    needed_text,
    pct,
)
from tracking.evaluation.evaluate import PER_CLASS_FILE, PER_CLASS_METRICS_MAX

PER_CLASS_ROWS = 10  # classes in the report's per-class table, the lowest F1 first


def pareto_figure_name(dataset: str) -> str:
    return f"accuracy_vs_cost_{dataset}.png"


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def accuracy_cell(group: ModelGroup, attribute: str = "test_accuracy") -> str:
    values = [getattr(r, attribute) for r in group.runs if getattr(r, attribute) is not None]
    return spread_cell(values)


def spread_cell(values: Sequence[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (single run)"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _interval(low: float, high: float) -> str:
    return f"{100 * low:+.2f} to {100 * high:+.2f}"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def paired_lines(verdicts: Sequence[PairVerdict]) -> list[str]:
    """Every pair of ranked models judged on the same test images (none for one model)."""
    if not verdicts:
        return []
    lines = ["### Paired verdicts on the same test images", "",
             "| Pair | Runs, test images | Difference (points) | "
             f"{CONFIDENCE:.0%} interval | Test | p | Holm p | Verdict |",
             "|---|---|---:|---|---|---:|---:|---|"]
    for v in verdicts:
        pair = f"{v.a.label} − {v.b.label}"
        r = v.result
        if r is None:
            lines.append(f"| {pair} | – | – | – | – | – | – | {v.unpaired_reason} |")
            continue
        test = r.test + (f" ({r.discordant[0]} vs {r.discordant[1]} discordant)"
                         if r.discordant else "")
        verdict = ("**separated**" if v.separated
                   else f"not separated: {needed_text(v)}")
        lines.append(f"| {pair} | {r.runs_a} + {r.runs_b}, {r.images} | "
                     f"{100 * r.difference:+.2f} | {_interval(r.ci_low, r.ci_high)} | {test} | "
                     f"{_p(r.p_value)} | {_p(v.p_holm)} | {verdict} |")
    return lines + ["", "Each pair on the test split both models have most runs on, image by "
                    "image (difference: first minus second, mean test accuracy). One run each: "
                    "McNemar's exact test on the images only one of the two gets right "
                    "(statsmodels); several runs: a paired bootstrap over runs and images "
                    f"jointly ({BOOTSTRAP_REPLICATES:,} replicates, seeded), its percentile "
                    "interval and p-value; the interval is that bootstrap's either way. Holm's "
                    f"correction over {len(verdicts)} pair{'s' * (len(verdicts) > 1)}. "
                    "Separated: corrected p < "
                    f"{ALPHA} and an interval without 0. What would separate a pair: the "
                    f"sample size at {ALPHA:.0%} and {POWER:.0%} power of the paired t-test on "
                    "the per-image differences (test images) and of the two-sample t-test on "
                    "the runs' accuracies (runs per model), statsmodels.", ""]


def recipe_lines(ranked: Sequence[ModelGroup], recipes: Sequence[ModelGroup],
                  tuning: Sequence[TuningSummary]) -> list[str]:
    """A fair study: each model at its recipe against it tuned, and the budget each spent."""
    if not recipes:
        return []
    tuned = {g.model: g for g in ranked}
    recipe = {g.model: g for g in recipes}
    models = [m for m in tuned if m in recipe]
    gaps = corrected([judge_pair(tuned[m], recipe[m]) for m in models])
    studies = {t.model: t for t in sorted(tuning, key=lambda t: t.metrics.get(
        "trials_complete", 0) + t.metrics.get("trials_pruned", 0))}
    lines = ["### Recipe against tuned", "",
             "| Model | Recipe | Tuned | Gap (points) | "
             f"{CONFIDENCE:.0%} interval | Holm p | Trials complete / pruned | Trial-epochs | "
             "Tuning s | Tuned setting |",
             "|---|---|---|---:|---|---:|---|---:|---:|---|"]
    for m, v in zip(models, gaps, strict=True):
        r, t = v.result, studies.get(m)
        budget = "– | – | –" if t is None else (
            f"{t.metrics.get('trials_complete', 0):.0f} / {t.metrics.get('trials_pruned', 0):.0f}"
            f" | {t.metrics.get('trial_epochs', 0):.0f} | {t.metrics.get('trial_seconds', 0):.0f}")
        setting = "–" if t is None else ", ".join(
            f"{k[len('best_'):]} {_short(v)}" for k, v in sorted(t.params.items())
            if k.startswith("best_"))
        interval = "–" if r is None else _interval(r.ci_low, r.ci_high)
        lines.append(f"| {m} | {accuracy_cell(recipe[m])} | {accuracy_cell(tuned[m])} | "
                     f"{pct(tuned[m].mean - recipe[m].mean)} | {interval} | {_p(v.p_holm)} | "
                     f"{budget} | {setting} |")
    return lines + ["", _budget_sentence([studies[m] for m in models if m in studies]),
                    "Gap: tuned minus recipe, mean test accuracy over the same seeds on the "
                    "same test split; interval and Holm p (over the models) from the paired "
                    "bootstrap. Trial-epochs and tuning seconds: everything the trials "
                    "trained, pruned ones included.", ""]


def _short(text: str) -> str:
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def _budget_sentence(studies: Sequence[TuningSummary]) -> str:
    """Whether every model was tuned with the same budget, from the studies' params."""
    keys = ("n_trials", "max_epochs", "pruner", "seeds_per_trial", "seed")
    settings = {tuple(t.params.get(k, "?") for k in keys) for t in studies}
    if len(settings) != 1:
        return ("The tuning budgets differ between models: " + "; ".join(
            f"{t.model}: " + ", ".join(f"{k} {t.params.get(k, '?')}" for k in keys)
            for t in studies) + ".")
    n, epochs, pruner, seeds, seed = settings.pop()
    return (f"Every model had the same budget: {n} trial{'s' * (n != '1')} (complete + "
            f"pruned) of at most {epochs} epoch{'s' * (epochs != '1')}, {pruner}, {seeds} "
            f"seed{'s' * (seeds != '1')} per trial from seed {seed}, on one data split; the "
            "final runs used other seeds, and only they saw the test split.")


def cost_lines(ranked: Sequence[ModelGroup], figure: bool) -> list[str]:
    """Accuracy against parameters, training seconds and latency; the dominated models."""
    if not ranked:
        return []
    costs = cost_values(ranked)
    joint = dominators([g.mean for g in ranked], list(zip(*costs.values(), strict=True)))
    per_cost = {name: dominators([g.mean for g in ranked], [[c] for c in values])
                for name, values in costs.items()}
    batch = next((g.latency.batch for g in ranked if g.latency), None)
    lines = ["### Accuracy against cost", "",
             "| Model | Test accuracy | Parameters | Train s | ms/image (batch 1) | "
             f"Images/s{f' (batch {batch})' if batch else ''} | Dominated |",
             "|---|---|---:|---:|---:|---:|---|"]
    for i, g in enumerate(ranked):
        if joint[i]:
            verdict = "**dominated** by " + ", ".join(ranked[j].label for j in joint[i])
        else:
            verdict = "; ".join(f"on {name} by " + ", ".join(ranked[j].label for j in by[i])
                                for name, by in per_cost.items() if by[i]) or "no (front)"
        latency = g.latency
        lines.append(f"| {g.label} | {accuracy_cell(g)} | {fmt(g.mean_of('num_params'), ',.0f')}"
                     f" | {fmt(g.mean_of('train_seconds'), '.0f')} | "
                     f"{fmt(latency and latency.ms_per_image, '.2f')} | "
                     f"{fmt(latency and latency.images_per_second, ',.0f')} | {verdict} |")
    device = next((g.latency.device for g in ranked if g.latency), None)
    where = (f"measured in the report's process on {device}, one model after the other "
             "(median of repeated predict calls after a warm-up; tracking/comparison/latency.py)"
             if device else "not measured (--no-latency, or no run's model could be loaded)")
    return lines + ["", f"Latency: {where}. Dominated: another model is at least as accurate "
                    "and at most as costly on parameters, training seconds and latency at "
                    "once (strictly better on one); otherwise the costs on which one is."
                    + (f" Figure: `{pareto_figure_name(ranked[0].dataset)}`." if figure
                       else ""), ""]


def cost_values(ranked: Sequence[ModelGroup]) -> dict[str, list[float | None]]:
    return {"parameters": [g.mean_of("num_params") for g in ranked],
            "training seconds": [g.mean_of("train_seconds") for g in ranked],
            "latency (ms/image)": [g.latency.ms_per_image if g.latency else None
                                   for g in ranked]}


def _class_cell(label: int, names: Sequence[str]) -> str:
    """A class name as a markdown table cell: in backticks, pipes escaped, label index after."""
    name = str(names[label]) if label < len(names) else str(label)
    return "`" + name.replace("`", "'").replace("|", "\\|") + f"` ({label})"


def per_class_lines(ranked: Sequence[ModelGroup], rows: int = PER_CLASS_ROWS) -> list[str]:
    """The classes the ranked models find hardest: the `rows` classes of lowest F1 (mean
    over the models of each model's mean over its runs, `ModelGroup.per_class`; ties: more
    test images first, then label order), each model's F1 with precision and recall, and the
    class's test images; [] when no ranked model's runs have per-class figures."""
    f1 = {id(g): g.per_class("f1") for g in ranked}
    shown = [g for g in ranked if f1[id(g)] is not None]
    if not shown:
        return []
    classes = len(f1[id(shown[0])])
    shown = [g for g in shown if len(f1[id(g)]) == classes]
    stack = np.stack([f1[id(g)] for g in shown])
    finite = np.isfinite(stack)
    mean = np.where(finite.any(axis=0),
                    np.where(finite, stack, 0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1),
                    np.inf)  # a class no model has an F1 for goes last
    names = shown[0].runs[0].class_names
    support = shown[0].runs[0].per_class["support"].to_numpy()
    # ties (many classes at F1 0): more test images first (more evidence), then label order
    order = np.lexsort((np.arange(classes), -support, mean))[:rows]
    precision = {id(g): g.per_class("precision") for g in shown}
    recall = {id(g): g.per_class("recall") for g in shown}
    lines = ["### Per class", "",
             "| Class (label) | Test images | " + " | ".join(f"{g.label} F1 (P / R)"
                                                          for g in shown) + " |",
             "|---|---:|" + "---|" * len(shown)]
    for k in order:
        cells = [f"{fmt(f1[id(g)][k], '.3f')} ({fmt(precision[id(g)][k], '.3f')} / "
                 f"{fmt(recall[id(g)][k], '.3f')})" if np.isfinite(f1[id(g)][k]) else "–"
                 for g in shown]
        images = str(int(support[k])) if support[k] >= 0 else "–"
        lines.append(f"| {_class_cell(int(k), names)} | {images} | " + " | ".join(cells) + " |")
    which = (f"the {len(order)} of {classes} classes" if len(order) < classes
             else f"all {classes} classes")
    return lines + ["", f"Per class on the test split, {which} with the lowest F1 (mean over "
                    "the models) first (ties: more test images first); each model's F1, "
                    "precision and recall, mean over its runs; test images: its first run's. "
                    "Every class of every run, with ROC AUC and average precision: the run's "
                    f"`{PER_CLASS_FILE}` (runs of more than {PER_CLASS_METRICS_MAX} classes "
                    "log no per-class metric keys).", ""]
