"""The project's domain errors: one base, and a kind for each way a request can fail.

Domain code (model store, threshold, model manager, packages, cameras) says what went wrong and
never how to answer it: the web APIs map each kind to an HTTP status in one place
(core/httperrors.py), the MQTT command path logs the refusal, the CLI prints the message and exits 1.
`code` is a stable machine-readable name of the case, `field` the input at fault (if any).
"""


class DeepLensError(Exception):
    """Base class of every error raised on purpose by core, edge, control and the shims."""
    code = "error"

    def __init__(self, message, code=None, field=None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.field = field


class InvalidInput(DeepLensError):
    """A value, document or archive sent by a user is malformed or out of range."""
    code = "invalid_input"


class NotFound(DeepLensError):
    """The thing asked for (a model version, a device) does not exist."""
    code = "not_found"


class Conflict(DeepLensError):
    """The request is valid but the current state forbids it (a swap in progress, the active version)."""
    code = "conflict"


class TooLarge(DeepLensError):
    """The input is larger than the configured limit."""
    code = "too_large"


class Unavailable(DeepLensError):
    """Something the request needs is not there now (a camera frame, a writable store); try later."""
    code = "unavailable"


class StorageError(Unavailable):
    """A file the service keeps cannot be written (read-only or missing folder)."""
    code = "store_unavailable"


class DiskFull(StorageError):
    """No space left where the service keeps its files."""
    code = "disk_full"


class ModelError(DeepLensError):
    """A model file or package is missing, inconsistent or cannot be loaded or run.

    `path` names the file at fault so that a user knows where to look.
    """
    code = "invalid_package"

    def __init__(self, message, path=None, code=None, field=None):
        super().__init__(f"{path}: {message}" if path else message, code=code, field=field)
        self.path = str(path) if path else None


def storage_error(exc, message):
    """The domain error for an OSError while writing the service's own files: DiskFull when the
    disk (or the quota) is full, StorageError otherwise; `message` is what a client is told."""
    import errno
    kind = DiskFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StorageError
    return kind(message)


class CameraError(DeepLensError):
    """A camera spec is malformed or its source cannot be opened."""
    code = "camera_error"


class DeviceError(DeepLensError):
    """A device refused a request, could not be reached, or a swap did not end well.

    `status` is the HTTP status the device answered, None when it could not be reached (code
    `device_unreachable`).
    """
    code = "device_error"

    def __init__(self, message, status=None, code=None):
        super().__init__(message, code=code)
        self.status = status
