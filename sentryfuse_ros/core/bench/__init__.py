"""The pruning benchmark: the grid of backbones x datasets x seeds x methods x ratios x live
conditions, its sharding and merge, and the report with plots.

May import: core.errors, core.config, core.data, core.model, core.pruning, core.training.
"""
