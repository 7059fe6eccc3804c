"""What a tuning study searches: the model's search space as Optuna distributions, the points
trials try, the baseline trial, and the record that keeps a resumed study on its space.

The space is the model's own `SearchSpace` (`models.MODELS[name].search`, beside its
recipe): epochs from its `min_epochs` to --max-epochs, batch size, the peak learning rate
(log-uniform) and, where the space has them, weight decay and the strength of the random
shifts. A trial's point sets Config fields (epochs, batch size, learning rate) and the
rest on the model's recipe (`trial_config`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from models import MODELS
from tracking.config import Config
from tracking.store.connect import masked
from tuning.config import TuneConfig, TuneError

BASELINE_EPOCHS = 5  # the original study's setting, enqueued as trial 0 ...
BASELINE_BATCH_SIZE = 128  # ... with the model recipe's learning rate
SPACE_ATTR = "search_space"  # study user attribute: space_record() of the command that made it
CONFIG_FIELDS = ("epochs", "batch_size", "learning_rate")  # tuned settings of Config itself;
# the others (weight_decay, shift) are fields of the model's Recipe


def search_space(model: str, max_epochs: int) -> dict[str, BaseDistribution]:
    """What is tuned for `model`, as Optuna distributions by setting name."""
    space = MODELS[model].search
    out: dict[str, BaseDistribution] = {
        "epochs": IntDistribution(min(space.min_epochs, max_epochs), max_epochs),
        "batch_size": CategoricalDistribution(space.batch_sizes),
        "learning_rate": FloatDistribution(*space.learning_rate, log=True),
    }
    if space.weight_decay is not None:
        out["weight_decay"] = FloatDistribution(*space.weight_decay, log=True)
    if space.shift is not None:
        out["shift"] = FloatDistribution(*space.shift)
    return out


def suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """One point of the search space, asked of the trial."""
    point: dict[str, Any] = {}
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            point[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            point[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            point[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
    return point


def trial_config(base: Config, point: dict[str, Any], run_name: str) -> Config:
    """`base` with a point of the search space: Config fields set, the rest set on its recipe."""
    recipe = replace(base.recipe or MODELS[base.model].recipe,
                     **{k: v for k, v in point.items() if k not in CONFIG_FIELDS})
    return replace(base, run_name=run_name, recipe=recipe,
                   **{k: v for k, v in point.items() if k in CONFIG_FIELDS})


def describe(distribution: BaseDistribution) -> str:
    """`2..10`, `16,32,64` or `0.0001..0.01 log`: how the study records and reports a range."""
    if isinstance(distribution, CategoricalDistribution):
        return ",".join(map(str, distribution.choices))
    if isinstance(distribution, IntDistribution | FloatDistribution):
        text = f"{distribution.low!r}..{distribution.high!r}"
        return text + " log" if distribution.log else text
    return repr(distribution)


def space_record(config: TuneConfig) -> dict[str, str]:
    """What a study is about, kept as its user attribute SPACE_ATTR: resuming it must match
    (seeds_per_trial, limit and seed only when not their defaults, so studies from before
    them still match)."""
    record = {"model": config.model, "dataset": config.dataset,
              **{name: describe(d) for name, d in search_space(config.model,
                                                                config.max_epochs).items()}}
    if config.seeds_per_trial > 1:  # a trial's value is then a mean: not mixed with others
        record["seeds_per_trial"] = str(config.seeds_per_trial)
    # the images a trial is scored on: --limit and --seed (the split's) pick them
    if config.limit:
        record["limit"] = str(config.limit)
    if config.seed:
        record["seed"] = str(config.seed)
    return record


def baseline_params(model: str, max_epochs: int) -> dict[str, Any]:
    """Trial 0: the original study's epochs and batch size with the recipe's learning rate
    (and the recipe's value of any other tuned setting)."""
    recipe = MODELS[model].recipe
    params = {"epochs": min(BASELINE_EPOCHS, max_epochs), "batch_size": BASELINE_BATCH_SIZE,
              "learning_rate": recipe.learning_rate}
    extra = set(search_space(model, max_epochs)) - set(params)
    return {**params, **{name: getattr(recipe, name) for name in sorted(extra)}}


def check_search_space(study: optuna.Study, config: TuneConfig) -> None:
    """Raise TuneError unless `config` searches the space `study` was created with (its
    SPACE_ATTR). A study from before that attribute is checked against its trials'
    distributions, which say nothing of the model and data set."""
    asked = space_record(config)
    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is None:
        seen: dict[str, set[str]] = {}
        for trial in study.get_trials(deepcopy=False):
            for name, distribution in trial.distributions.items():
                seen.setdefault(name, set()).add(describe(distribution))
        recorded = {name: " and ".join(sorted(texts)) for name, texts in seen.items()}
        differ = [k for k in recorded if recorded[k] != asked.get(k)]
    else:
        differ = [k for k in {**recorded, **asked} if recorded.get(k) != asked.get(k)]
    if not differ:
        return
    min_epochs = MODELS[config.model].search.min_epochs
    hints = []
    for key in differ:
        value = str(recorded.get(key, "(none)"))
        low, _, high = value.partition("..")
        if key in ("model", "dataset"):
            hints.append(f"--{key} {value}")
        elif key == "seeds_per_trial":
            hints.append(f"--seeds-per-trial {1 if value == '(none)' else value}")
        elif key in ("limit", "seed"):
            hints.append(f"--{key} {0 if value == '(none)' else value}")
        elif key == "epochs" and low.isdigit() and high.isdigit():
            hints.append(f"--max-epochs {high}" if int(low) == min(min_epochs, int(high))
                         else f"min_epochs = {low} and --max-epochs {high}")
        else:
            hints.append(f"{key} {value} in the search space of {config.model} "
                         "(models/__init__.py)")

    def show(space: dict[str, Any]) -> str:
        return ", ".join(f"{k} {space.get(k, '(none)')}" for k in differ)

    raise TuneError(f"study {config.study_name!r} in {masked(config.storage)} was created with "
                    f"{show(recorded)}, this command asks for {show(asked)}: use a new "
                    f"--study-name, or resume with the same settings ({'; '.join(hints)})")
