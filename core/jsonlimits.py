"""JSON from untrusted senders, parsed within limits: `parse_json(data, max_bytes, max_depth)`.

`json.loads` recurses once per nesting level, so 100 KB of `[` raises RecursionError (not
ValueError) and kills whatever thread parsed it (an MQTT network thread, a request worker).
`parse_json` checks the size, then the nesting depth with a flat scan that never recurses, and
only then parses. Every refusal is a core.errors.InvalidInput subclass with its own `code`:

| error | code | when |
|---|---|---|
| `JSONTooLarge` | `json_too_large` | more than `max_bytes` bytes (UTF-8) |
| `JSONTooDeep` | `json_too_deep` | arrays and objects nested more than `max_depth` levels |
| `JSONMalformed` | `json_malformed` | not JSON, or not UTF-8 |

Used by the MQTT command path (edge/events.py) and meant for REST request bodies as well.
"""
import json
import re

from .errors import InvalidInput

__all__ = ["JSONMalformed", "JSONTooDeep", "JSONTooLarge", "nesting_depth", "parse_json"]

# A JSON string, escapes included (the "unrolled loop" form: linear, no backtracking).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JSONTooLarge(InvalidInput):
    """The document is larger than the limit."""
    code = "json_too_large"


class JSONTooDeep(InvalidInput):
    """Arrays and objects nest deeper than the limit."""
    code = "json_too_deep"


class JSONMalformed(InvalidInput):
    """The document is not JSON (or not UTF-8 text)."""
    code = "json_malformed"


def nesting_depth(text, stop_above=None):
    """How deeply arrays and objects nest in `text` (0 for a scalar), brackets inside strings not
    counted. Exact for valid JSON; for broken JSON it is never below what a parser would reach.
    With `stop_above`, the scan stops as soon as the depth exceeds it (and returns that depth)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def parse_json(data, max_bytes, max_depth):
    """The JSON document in `data` (bytes or str), parsed only if it is at most `max_bytes` bytes
    and nests at most `max_depth` levels. Raises JSONTooLarge, JSONTooDeep or JSONMalformed (all
    InvalidInput), never RecursionError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = len(data)
        if size > max_bytes:
            raise JSONTooLarge(f"the JSON document is {size} bytes, more than the {max_bytes} allowed")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONMalformed(f"the JSON document is not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        text = data
        size = len(text) if len(text) > max_bytes else len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise JSONTooLarge(f"the JSON document is more than the {max_bytes} bytes allowed")
    if text.startswith("\ufeff"):
        raise JSONMalformed("the JSON document starts with a byte order mark")
    if nesting_depth(text, stop_above=max_depth) > max_depth:
        raise JSONTooDeep(f"the JSON document nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # not expected after the scan above; never let it out
        raise JSONTooDeep("the JSON document nests too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError; ValueError for an integer with too many digits
        raise JSONMalformed(f"the JSON document is malformed: {exc}") from None
