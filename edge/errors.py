"""Errors of the edge service: one base, and the API error that carries its HTTP status."""


class EdgeError(Exception):
    """Base class of the edge service's errors."""


class ConfigError(EdgeError):
    """A configuration value is unknown or invalid; the message names the key, value and source."""


class ApiError(EdgeError):
    """An error answered as `{"error": {"code", "message", "field"?}}` with `status`."""

    def __init__(self, status, code, message, field=None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def to_json(self):
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}
