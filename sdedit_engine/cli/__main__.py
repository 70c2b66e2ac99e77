"""``python -m sdedit_engine.cli`` (and ``accelerate launch -m sdedit_engine.cli``)."""

from . import main

raise SystemExit(main())
