"""Stands in for uri_template in Ray's processes (see scoring_lib.engines.ray_boot): not installed there."""

raise ImportError("uri_template is kept out of the Ray processes the workbench starts")
