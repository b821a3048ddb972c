"""Stands in for rfc3986_validator in Ray's processes (see scoring_lib.engines.ray_boot): not installed there."""

raise ImportError("rfc3986_validator is kept out of the Ray processes the workbench starts")
