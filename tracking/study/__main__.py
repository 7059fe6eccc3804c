"""`python -m tracking.study`: the command line of tracking.study.cli."""

import sys

from tracking.study.cli import main

sys.exit(main())
