"""Stands in for isoduration in Ray's processes (see scoring_lib.engines.ray_boot): not installed there."""

raise ImportError("isoduration is kept out of the Ray processes the workbench starts")
