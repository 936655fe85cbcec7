"""Zero-shot structured pruning: SentryGate (modality-conditioned unit scores), unit selection
under a compute budget, physical slicing and the sub-network cache, and the baseline criteria.
What a budget is, its one check and its one level-snapping rule live in budget.py.
The checkpoint (model + its SentryGate, checkpoint.py) lives here, the first layer that knows both,
so training writes it and the runtime reads it without the runtime depending on training.

May import: core.errors, core.config, core.data, core.model.
"""
