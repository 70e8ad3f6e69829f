"""``python -m edgezoo.cli``: the ``edgezoo`` command without its console script."""

import sys

from edgezoo.cli.main import main

sys.exit(main())
