"""``python -m al_loop.cli``: the same as the ``al-loop`` command."""
import sys

from al_loop.cli import main

sys.exit(main())
