"""``python -m cqrs_dagster.cli`` = the ``cqrs`` console script."""

import sys

from . import main

sys.exit(main())
