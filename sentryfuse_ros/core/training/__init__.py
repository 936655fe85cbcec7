"""Training SentryFuse (saliency teacher, alignment loss, modality-dropout curriculum), its
configs and resumable state; batches from bag datasets (bagsource.py) and data-parallel training
under torchrun (distributed.py). Checkpoints are written with core.pruning.checkpoint.

May import: core.errors, core.config, core.data, core.model, core.pruning.
"""
