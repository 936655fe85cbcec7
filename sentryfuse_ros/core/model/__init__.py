"""The SentryFuse network: model config, tokenizers (log-mel for audio), SentryAttend and dense
attention, the fusion block with unit gates, the three backbones, and analytic FLOP/param counts.

May import: core.errors, core.config, core.data.preprocess (modality names, input geometry).
"""
