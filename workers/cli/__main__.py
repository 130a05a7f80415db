"""``python -m embedstream.workers.cli``: the same as the ``embedstream`` command."""

import sys

from embedstream.workers.cli import main

sys.exit(main())
