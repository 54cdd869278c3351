"""``python -m idstore``: the ``idstore`` command."""

import sys

from idstore.cli import main

sys.exit(main())
