"""mkt's errors: each names what is wrong and how to fix it."""


class MktError(ValueError):
    """Base class of every error mkt raises on bad input."""


class IncompatibleModelError(MktError):
    """A key, pack or alignment does not fit the model (layers, hidden size, identity)."""


class CorruptArtifactError(MktError):
    """A saved pack, key or alignment is missing, truncated or tampered with."""


class NonFiniteError(MktError):
    """NaN or inf in activations, directions or parameters."""


class ModelLoadError(MktError):
    """A model could not be loaded (not found locally and no hub access)."""
