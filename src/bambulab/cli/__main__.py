"""``python -m bambulab.cli``: the same as the ``bambu`` console script."""

from . import main

raise SystemExit(main())
