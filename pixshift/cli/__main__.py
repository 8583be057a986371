"""``python -m pixshift.cli``: the same as the ``pixshift`` command."""

import sys

from . import main

sys.exit(main())
