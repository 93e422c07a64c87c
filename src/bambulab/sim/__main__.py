"""``python -m bambulab.sim``: run the simulated cloud in the foreground."""

from __future__ import annotations

from .command import main

raise SystemExit(main())
