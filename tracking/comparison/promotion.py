"""Champion and challenger in the model registry: a model earns the `champion` alias only by
beating the champion on the same test images (the rules: `python -m tracking.promote --help`).

    p = promote(run_id, runs=[other_seed_run_ids], name="digits-classifier")
    p.alias, p.version, p.reason                     # "champion" or "challenger"

Models are registered per data identity (`registry_name`: `digits-classifier` for a built-in
data set, `<folder name>-<8 hex digits of its data digest>-classifier` for folder data), carry
MLflow's aliases (stages are deprecated) and the tags `seed_runs` (every run judged with the
version) and `test_digest` (the test split it was judged on). The test is
`tracking.comparison.paired`'s: McNemar's exact test for one run a side, else the paired
bootstrap; the decision and its figures go on the candidate's run (`log_decision`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePath

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tracking.cli import unquote
from tracking.comparison.paired import (
    ALPHA,
    PairedResult,
    PairingError,
    chance_p_value,
    correctness,
    paired_difference,
)
from tracking.errors import UsageError
from tracking.evaluation.outcomes import PredictionsError, probabilities_of, read_predictions
from tracking.serving.pyfunc import MODEL_NAME

CHAMPION, CHALLENGER = "champion", "challenger"  # the registry aliases
SEED_RUNS_TAG = "seed_runs"  # on a version: every run judged with it (comma-joined ids)
DIGEST_TAG = "test_digest"  # on a version: the test split it was judged on


class PromoteError(UsageError):
    """The candidate cannot be judged (unknown run, no predictions, another test split)."""


@dataclass
class Promotion:
    """What `promote` decided."""

    name: str
    version: str
    alias: str  # CHAMPION or CHALLENGER
    reason: str
    champion_version: str | None  # the champion it was judged against (None: first one)
    result: PairedResult | None


def registry_name(dataset: str, source: str = "", digest: str = "") -> str:
    """The registered model that a run's models go to, from its data identity (its params
    `dataset`, `data_source`, `data_digest`): `<dataset>-classifier` for a built-in data set
    (`digits-classifier`); where the run logged a data digest (folder data, whatever its
    layout), `<name>-<the digest's first 8 hex digits>-classifier`, `<name>` the folder's
    name (a manifest named other than metadata.csv: its file name without .csv) with every
    run of characters other than ASCII letters, digits, `_`, `.` and `-` made one `_`
    (`pets-3f2a9c1e-classifier`). So two folder data sets never share a registered model,
    even with the same folder name and class names, while one folder copied elsewhere (the
    same files, sizes, labels and splits) keeps its name. A folder run logged before data
    digests existed keeps `folder-classifier`."""
    if not digest:
        return f"{dataset}-classifier"
    name = PurePath(source).name if dataset == "folder" and source else dataset
    name = name[:-4] if name.lower().endswith(".csv") else name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or dataset
    return f"{name}-{digest[:8]}-classifier"


def registry_name_of(params: Mapping[str, str]) -> str:
    """`registry_name` of a run's params (as logged; `mlflow run` quotes some)."""
    return registry_name(unquote(params.get("dataset", "unknown")),
                         unquote(params.get("data_source", "")),
                         unquote(params.get("data_digest", "")))


def split_of(run_ids: Sequence[str], side: str) -> tuple[str, list]:
    """(test digest, predictions tables) of runs that must share one test split."""
    try:
        frames = [read_predictions(run_id) for run_id in run_ids]
    except PredictionsError as err:
        raise PromoteError(f"{side}: {err}") from None
    digests = {str(f["test_digest"].iloc[0]) for f in frames}
    if len(digests) != 1:
        raise PromoteError(f"{side}: runs {', '.join(run_ids)} were tested on different "
                           f"test splits ({', '.join(sorted(digests))})")
    return digests.pop(), frames


def check_name(name: str) -> None:
    """Raise PromoteError when the registry would refuse `name` (MLflow's own rules: asked by
    looking the name up, which checks it first)."""
    try:
        mlflow.MlflowClient().get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "INVALID_PARAMETER_VALUE":
            raise PromoteError(str(err).splitlines()[0]) from None


def current_champion(name: str) -> ModelVersion | None:
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no champion yet
        return None


def register(run_id: str, name: str, tags: dict[str, str]) -> ModelVersion:
    """The version of `name` holding run `run_id`'s model (registered now if none does)."""
    client = mlflow.MlflowClient()
    try:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        existing = []
    if existing:
        return existing[0]
    run = client.get_run(run_id)
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list",
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'")
    uri = f"models:/{logged[0].model_id}" if logged else f"runs:/{run_id}/{MODEL_NAME}"
    return mlflow.register_model(uri, name, tags=tags)


def judge(candidate: list, champion: list) -> PairedResult:
    """Candidate minus champion on one split (tracking.comparison.paired)."""
    try:
        a, b = correctness(candidate), correctness(champion)
    except PairingError as err:
        raise PromoteError(str(err)) from None
    return paired_difference(a, b)


def chance_figures(frame: pd.DataFrame) -> tuple[float, str]:
    """(p-value, `45 of 50 test images right, chance 1/10, p = 1e-30`) of a run's predictions
    against chance (`tracking.comparison.paired.chance_p_value`)."""
    right = int((frame["predicted_label"] == frame["true_label"]).sum())
    classes = len(probabilities_of(frame)[0])
    p = chance_p_value(right, len(frame), classes)
    return p, f"{right} of {len(frame)} test images right, chance 1/{classes}, p = {p:.2g}"


def first_verdict(frame: pd.DataFrame) -> tuple[str, str]:
    """(alias, reason) of a candidate with no champion to beat: champion when its run is
    better than chance on the test split at ALPHA."""
    p, figures = chance_figures(frame)
    if p < ALPHA:
        return CHAMPION, f"the first champion (none to beat; better than chance: {figures})"
    return CHALLENGER, f"no champion yet, and not better than chance: {figures}"


def decide(result: PairedResult) -> tuple[str, str]:
    """(alias, reason) by the rule in the module docstring."""
    figures = (f"{100 * result.difference:+.2f} points, 95% interval "
               f"{100 * result.ci_low:+.2f} to {100 * result.ci_high:+.2f}, {result.test} "
               f"p = {result.p_value:.2g}, {result.runs_a} against {result.runs_b} runs on "
               f"{result.images} test images")
    if result.p_value < ALPHA and result.ci_low > 0:
        return CHAMPION, f"beats the champion: {figures}"
    return CHALLENGER, f"not shown better than the champion: {figures}"


def promote(run_id: str, runs: Sequence[str] = (), name: str = "",
            replace_champion: bool = False) -> Promotion:
    """Register run `run_id`'s model under `name` (default `registry_name_of` its params:
    `<dataset>-classifier`, or for folder data `<folder>-<digest>-classifier`) and give it
    `champion` or `challenger` by the rule in the module docstring; log the decision on the
    run. A champion whose evidence is gone (its run deleted, or its predictions table
    unreadable) cannot be beaten: with `replace_champion` the candidate is judged as a first
    champion (against chance) instead. Raises PromoteError (nothing registered) for an unknown
    run, runs without predictions tables, test splits that differ from each other or from the
    champion's, or a champion without evidence when `replace_champion` is off."""
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PromoteError(f"no run {run_id!r} in {mlflow.get_tracking_uri()}") from None
    name = name or registry_name_of(run.data.params)
    check_name(name)
    ids = list(dict.fromkeys([run_id, *runs]))
    digest, candidate = split_of(ids, "candidate")
    champion = current_champion(name)
    result = None
    alias, reason = first_verdict(candidate[0])
    if champion is not None:
        champion_ids = (champion.tags.get(SEED_RUNS_TAG) or champion.run_id).split(",")
        if run_id in champion_ids:  # nothing to judge, no alias to move
            return Promotion(name, str(champion.version), CHAMPION,
                             f"already the champion (version {champion.version})",
                             str(champion.version), None)
        else:
            try:
                champion_digest, champion_frames = split_of(champion_ids, "champion")
            except PromoteError as err:
                if not replace_champion:
                    raise PromoteError(
                        f"the champion of {name} (version {champion.version}) has lost its "
                        f"evidence ({err}): nothing can be shown better than it; "
                        "--replace-champion judges the candidate against chance alone and "
                        "makes it champion if it beats chance") from None
                figures = chance_figures(candidate[0])[1]
                reason = (f"replaces version {champion.version}, whose evidence is gone ("
                          f"better than chance: {figures})" if alias == CHAMPION else
                          f"version {champion.version}'s evidence is gone, but this one is "
                          f"not better than chance: {figures}")
            else:
                if champion_digest != digest:
                    raise PromoteError(
                        f"run {run_id} was tested on split {digest}, the champion of {name} "
                        f"(version {champion.version}) on {champion_digest}: different test "
                        "images cannot be compared; train the candidate on the champion's "
                        "split (the same data set, image size, splits and --split-seed)")
                result = judge(candidate, champion_frames)
                alias, reason = decide(result)
    version = register(run_id, name, {SEED_RUNS_TAG: ",".join(ids), DIGEST_TAG: digest})
    client.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION:  # it is no challenger any more
        try:
            if client.get_model_version_by_alias(name, CHALLENGER).version == version.version:
                client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException:
            pass
    promotion = Promotion(name, str(version.version), alias, reason,
                          None if champion is None else str(champion.version), result)
    log_decision(run_id, promotion)
    return promotion


def log_decision(run_id: str, p: Promotion) -> None:
    """The decision and its figures, on the candidate's run and its version."""
    client = mlflow.MlflowClient()
    text = f"{p.alias} ({p.name} version {p.version}): {p.reason}"
    client.set_tag(run_id, "promotion", text[:5000])
    client.set_model_version_tag(p.name, p.version, "promotion", text[:5000])
    if p.result is not None:
        for key in ("difference", "ci_low", "ci_high", "p_value"):
            client.log_metric(run_id, f"promotion_{key}", float(getattr(p.result, key)))
    client.log_text(run_id, json.dumps(asdict(p), indent=2, default=str), "promotion.json")


def format_promotion(p: Promotion) -> str:
    return f"{p.name} version {p.version}: {p.alias}: {p.reason}"
