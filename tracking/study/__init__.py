"""The whole study in one command (`python -m tracking.study`, its help in tracking.study.cli):
every model over several seeds, optionally tuned, one report; the fair study tunes every model
with one budget first.

    config  StudyConfig, the study's settings
    steps   what both studies do: load a seed's data, train one run, tune one model
    fair    the fair study (--tune-budget), shared by any number of workers
    plain   run_comparison_study: the plain study, or the fair one
    cli     the command line
"""

from tracking.study.cli import build_parser, main
from tracking.study.config import StudyConfig
from tracking.study.plain import run_comparison_study

__all__ = ["StudyConfig", "build_parser", "main", "run_comparison_study"]
