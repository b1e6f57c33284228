"""`python -m charter` runs the command line."""

import sys

from charter.cli import main

sys.exit(main())
