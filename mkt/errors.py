"""mkt's errors: each names what is wrong and how to fix it."""

import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # terminal styling some libraries put in their messages


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


class UnknownNameError(ModelLoadError, KeyError):
    """A model name mkt does not know (an organism); a ``KeyError`` too, as lookups raise."""

    __str__ = BaseException.__str__  # the message as written, not KeyError's quoted repr


def one_line(err: BaseException, limit: int = 600) -> str:
    """An error's message on one line: whitespace runs (newlines too) as one space, terminal styling dropped."""
    text = " ".join(ANSI_ESCAPE.sub("", str(err)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
