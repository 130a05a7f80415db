"""``python -m embedstream.workers.cli``: the same as the ``embedstream`` command."""

import sys

from embedstream.workers.cli import main

if __name__ == "__main__":  # importing this module (to check that every module imports) must not run the CLI
    sys.exit(main())
