"""`python -m sublora COMMAND …`: the same as the `sublora` command (sublora.cli)."""
import sys

from sublora.cli import main

sys.exit(main())
