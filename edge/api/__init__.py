"""REST resources of the edge service, one blueprint each (docs/rest-api.md, and /openapi.json)."""
import hmac

from flask import current_app, request

from core.errors import DeepLensError, InvalidInput
from core.jsonlimits import parse_json

MAX_JSON_BYTES = 64 * 1024  # every JSON body the API takes (app.py refuses larger bodies unread)
MAX_JSON_DEPTH = 8  # a threshold document nests 2 levels


class ApiError(DeepLensError):
    """A refusal that only the REST API knows (a missing or wrong token), with its HTTP `status`.
    Domain refusals are core.errors kinds, mapped to a status in core/httperrors.py."""

    def __init__(self, status, code, message, field=None):
        super().__init__(message, code=code, field=field)
        self.status = status


def runtime():
    return current_app.extensions["deeplens"]


def json_body():
    """The request's JSON document, parsed within limits (core.jsonlimits): too large, too deeply
    nested or malformed is InvalidInput, never a RecursionError."""
    return parse_json(request.get_data(cache=False), MAX_JSON_BYTES, MAX_JSON_DEPTH)


def require_token():
    """Changes (and reads, when the device protects them) need `Authorization: Bearer <token>`;
    with no token configured, changes are off."""
    token = runtime().config.token
    if not token:
        raise ApiError(403, "no_token_configured", "changes are off until the device has a token: set 'token' "
                       "or 'token_file' in its config file, DEEPLENS_TOKEN, or --token, and restart the service")
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "send the device's token as 'Authorization: Bearer TOKEN' "
                       "(deeplens-ctl reads it from devices.yaml or DEEPLENS_TOKEN)")


def query(spec):
    """Validated query options: `spec` maps each allowed name to (type or tuple of choices, default, range).

    Unknown options and bad values raise InvalidInput naming the field.
    """
    unknown = sorted(set(request.args) - set(spec))
    if unknown:
        raise InvalidInput(f"unknown option '{unknown[0]}'; allowed: {', '.join(spec)}", "unknown_option", unknown[0])
    values = {}
    for name, (kind, default, limits) in spec.items():
        raw = request.args.get(name)
        if raw is None:
            values[name] = default
        elif isinstance(kind, tuple):
            if raw not in kind:
                raise InvalidInput(f"{name} must be one of {', '.join(kind)}, got {raw!r}", "invalid_option", name)
            values[name] = raw
        else:
            try:
                value = kind(raw)
            except ValueError:
                raise InvalidInput(f"{name} must be {kind.__name__}, got {raw!r}", "invalid_option", name) from None
            low, high = limits
            if not low <= value <= high:
                raise InvalidInput(f"{name} must be between {low} and {high}, got {raw!r}", "invalid_option", name)
            values[name] = value
    return values
