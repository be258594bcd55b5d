"""Errors of the shims, one base class so callers can catch them together."""


class ShimError(Exception):
    """Base class of every error raised by the shims."""


class CameraError(ShimError):
    """A camera spec is malformed or its source cannot be opened."""


class ModelError(ShimError):
    """A model file or package is missing, inconsistent or cannot be loaded.

    `path` names the file at fault so that a user knows where to look.
    """

    def __init__(self, message, path=None):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = str(path) if path else None
