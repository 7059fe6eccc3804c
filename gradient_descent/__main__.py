"""``python -m gradient_descent``: see :mod:`gradient_descent.cli` for the options."""

import sys

from gradient_descent.cli import main

if __name__ == "__main__":
    sys.exit(main())
