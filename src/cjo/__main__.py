"""``python -m cjo``: the same as the ``cjo`` command."""

from cjo.cli import main

raise SystemExit(main())
