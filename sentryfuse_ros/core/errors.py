"""The project's exceptions. Every message names the offending value and what was expected."""


class SentryFuseError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(SentryFuseError, ValueError):
    """A configuration key or value is invalid."""


class ConversionError(SentryFuseError, ValueError):
    """A ROS message cannot be converted to an array (malformed or unsupported)."""


class ModelError(SentryFuseError, ValueError):
    """A model is built or called with inconsistent shapes or settings."""


class CheckpointError(SentryFuseError):
    """A checkpoint is missing, corrupt, or does not match the model it claims to hold."""


class PruningError(SentryFuseError, ValueError):
    """A pruning request (masks, budget, live set) cannot be satisfied."""


class DataError(SentryFuseError, ValueError):
    """A dataset file is missing or malformed, or a sample cannot be produced."""


class BagError(SentryFuseError):
    """A rosbag is missing, corrupt, or lacks what was asked of it."""


class RuntimeChoiceError(SentryFuseError, ValueError):
    """A device / precision / backend this machine cannot run (e.g. device='cuda' without CUDA)."""


class ExportError(SentryFuseError):
    """An ONNX export or its manifest is missing, corrupt, or does not match torch."""


class TrainingError(SentryFuseError):
    """Training cannot go on: a non-finite loss (non-finite data, a diverged model)."""


class StampError(SentryFuseError, ValueError):
    """A message stamp is far from the receiver's clock (unsynchronised sensor clock, a corrupt stamp)."""
