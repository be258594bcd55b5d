"""REST resources of the edge service, one blueprint each (see design.md, section 2)."""
from flask import current_app, request

from ..errors import ApiError


def runtime():
    return current_app.extensions["deeplens"]


def query(spec):
    """Validated query options: `spec` maps each allowed name to (type or tuple of choices, default, range).

    Unknown options and bad values answer 400 naming the field.
    """
    unknown = sorted(set(request.args) - set(spec))
    if unknown:
        raise ApiError(400, "unknown_option", f"unknown option '{unknown[0]}'; allowed: {', '.join(spec)}", unknown[0])
    values = {}
    for name, (kind, default, limits) in spec.items():
        raw = request.args.get(name)
        if raw is None:
            values[name] = default
        elif isinstance(kind, tuple):
            if raw not in kind:
                raise ApiError(400, "invalid_option", f"{name} must be one of {', '.join(kind)}, got {raw!r}", name)
            values[name] = raw
        else:
            try:
                value = kind(raw)
            except ValueError:
                raise ApiError(400, "invalid_option", f"{name} must be {kind.__name__}, got {raw!r}", name) from None
            low, high = limits
            if not low <= value <= high:
                raise ApiError(400, "invalid_option", f"{name} must be between {low} and {high}, got {raw!r}", name)
            values[name] = value
    return values
