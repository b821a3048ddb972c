"""matplotlib's pyplot with a backend that works anywhere: Agg outside a notebook, the notebook's own
inside one. One place, for the report's figures and the ramp's."""

from __future__ import annotations

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl")):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt"]
