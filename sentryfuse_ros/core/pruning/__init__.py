"""Zero-shot structured pruning: SentryGate (modality-conditioned unit scores), unit selection
under a compute budget, physical slicing and the sub-network cache, and the baseline criteria.

May import: core.errors, core.config, core.model.
"""
