"""``python -m mfjax``: the ``mfjax`` command line (same as the installed ``mfjax`` script)."""

import sys

from mfjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
