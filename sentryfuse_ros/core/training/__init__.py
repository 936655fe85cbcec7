"""Training SentryFuse (saliency teacher, alignment loss, modality-dropout curriculum),
checkpoints, and offline evaluation of subsets x budgets; batches from bag datasets (bagsource.py) and
data-parallel training under torchrun (distributed.py).

May import: core.errors, core.config, core.data, core.model, core.pruning.
"""
