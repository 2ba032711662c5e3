"""`python -m spectask.codegen`: the same as `spectask generate`."""

from __future__ import annotations

from spectask.codegen import main

raise SystemExit(main())
