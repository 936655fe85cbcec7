"""Offline replay: a bag drives the robot's own health and perception code on the bag's clock
(replay.py), with injected faults and ground-truth labels (faults.py). Two consumers share that
loop: evaluation (per-phase summaries in phases.py, the report in report.py) and dataset building
for training on recorded bags (dataset.py).

May import: everything in core except core.bench.
"""
