"""``python -m corelib`` is the ``corelib`` command."""

import sys

from .cli import main

sys.exit(main())
