"""Training SentryFuse (saliency teacher, alignment loss, modality-dropout curriculum),
checkpoints, and offline evaluation of subsets x budgets.

May import: core.errors, core.config, core.data, core.model, core.pruning.
"""
