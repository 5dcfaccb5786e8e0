"""``python -m al_loop.cli``: the same as the ``al-loop`` command."""
import sys

from al_loop.cli import main

if __name__ == "__main__":  # simulate's worker processes import the main module again
    sys.exit(main())
