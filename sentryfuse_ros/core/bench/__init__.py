"""The pruning benchmark: the grid of backbones x datasets x seeds x methods x ratios x live
conditions, its sharding and merge, and the report with plots.

May import: everything in core except core.bags and core.runtime.
"""
