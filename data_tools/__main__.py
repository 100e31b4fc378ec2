"""``python -m data_tools``: see :mod:`data_tools.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
