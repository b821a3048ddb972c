"""Stands in for rfc3987_syntax in Ray's processes (see scoring_lib.engines.ray_boot): not installed there."""

raise ImportError("rfc3987_syntax is kept out of the Ray processes the workbench starts")
