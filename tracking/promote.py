"""Champion and challenger: a model earns the `champion` alias only by beating the champion.

    python -m tracking.promote --run-id ID [--runs ID,ID] [--name NAME]

Models are registered per data identity (--name to change): `<dataset>-classifier` for a
built-in data set (`digits-classifier`), `<folder>-<8 hex>-classifier` for folder data, the
folder's name (a manifest's file name without .csv) with each run of characters other than
letters, digits, `_`, `.` and `-` made one `_`, and the first 8 hex digits of the run's
`data_digest` (`pets-3f2a9c1e-classifier`; a folder run logged before data digests existed:
`folder-classifier`). They carry MLflow's aliases (stages are deprecated). The candidate is the
model logged by --run-id, registered as a new version unless it already is one; --runs names
other runs of the same setting (other seeds) that are judged with it. The current champion is
judged by its version's run and the runs listed in its `seed_runs` tag. Both sides' per-image
test predictions (`predictions.json`) must be on one test split (the same `test_digest`):
different splits are refused with exit status 2, before anything is registered.

The test (`tracking.comparison.paired`): McNemar's exact test for one run on each side, else the
paired bootstrap over runs and images; the 95% interval is the bootstrap's. The candidate takes
`champion` only when the p-value (Holm's correction over this one comparison leaves it as it
is) is below 0.05 and the interval of candidate minus champion lies above zero; otherwise it
gets `challenger`. The first candidate of a name becomes its champion when its run is better
than chance on the test split (exact binomial test against 1/classes at 5%), else challenger.
A champion whose run was deleted (or whose predictions cannot be read) cannot be beaten: the
command says so and exits 2; with --replace-champion the candidate is judged as a first
champion instead, and the old version keeps its number without the alias.
Either way the decision and its figures go on the candidate's run: tag `promotion`, metrics
`promotion_difference`, `promotion_ci_low`, `promotion_ci_high`, `promotion_p_value`, and
`promotion.json`; the version gets the tag `promotion` too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tracking.cli import CommandParser, bad_input_exits, unquote
from tracking.comparison.promotion import format_promotion, promote
from tracking.store.ui import registered_model_url


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m tracking.promote", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True, help="the candidate: a finished training run")
    p.add_argument("--runs", default="",
                   help="comma-separated runs of the same setting (other seeds) judged with it")
    p.add_argument("--name", default="",
                   help="registered model (default from the run's data: <dataset>-classifier for "
                        "a built-in data set, <folder>-<8 hex of data_digest>-classifier for "
                        "folder data)")
    p.add_argument("--replace-champion", action="store_true",
                   help="when the champion's run or predictions are gone: judge the candidate "
                        "against chance alone, as a first champion")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 2 (nothing registered) when the candidate cannot be judged."""
    parser = build_parser()
    args = parser.parse_args(argv)
    runs = [r.strip() for r in unquote(args.runs).split(",") if r.strip()]
    with bad_input_exits(parser):
        promotion = promote(unquote(args.run_id), runs, unquote(args.name),
                            replace_champion=args.replace_champion)
    print(format_promotion(promotion))
    print(f"registered model: {registered_model_url(promotion.name, promotion.version)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
