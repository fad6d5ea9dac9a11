"""A request body as JSON: the media type it must declare, and the strict reading of its bytes.

Pure functions over the header's value and the body's bytes (the route streams the body under its
size limit first, serve/ingress/http_routes.py), so every refusal is an InvalidRequest (400) or
UnsupportedMediaType (415) naming `body` — never a Python error escaping as a 500:
- duplicate keys, NaN / Infinity, and numbers that overflow to infinity (`1e999`) are refused;
- an integer literal longer than Python converts (`sys.get_int_max_str_digits()`, 4,300 digits) is
  refused before conversion, with the length, never echoed;
- invalid UTF-8, unpaired surrogates and nesting beyond the parser's recursion limit are refused.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from aligner.errors import InvalidRequest
from serve.errors import UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
SHOWN_CHARS = 40  # of a refused literal: enough to recognise it, never a huge value echoed back


def check_media_type(content_type: str | None) -> None:
    """A JSON body's Content-Type: absent (as many clients send it) or application/json, any parameters
    (`charset=utf-8`), any case; anything else is 415 naming the allowed type. `+json` suffixes
    (`application/merge-patch+json`) mean other semantics than this API's, so they are refused too."""
    if content_type is None or not content_type.strip():
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = content_type if len(content_type) <= SHOWN_CHARS else content_type[:SHOWN_CHARS] + "..."
        raise UnsupportedMediaType(f"is {shown!r}; this route accepts only {JSON_MEDIA_TYPE} (or no Content-Type)")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()  # linear: a body of 100,000 keys must not cost 100,000² comparisons
        for name, _ in pairs:
            if name in seen:
                break
            seen.add(name)
        if len(name) > SHOWN_CHARS:  # a key of a megabyte is not echoed back
            raise InvalidRequest("body", f"a key of {len(name)} characters, {_shown(name)!r}, appears more than once")
        if not name.isprintable() or any("\ud800" <= c <= "\udfff" for c in name):
            # Found by review: an unpaired surrogate as the field could not be encoded in the answer (500).
            raise InvalidRequest("body", f"the key {ascii(name)} appears more than once in the same JSON object")
        raise InvalidRequest(name, "appears more than once in the same JSON object")
    return data


def _no_constants(name: str) -> Any:
    raise InvalidRequest("body", f"{name} is not valid JSON; numbers must be finite")


def _shown(literal: str) -> str:
    return literal if len(literal) <= SHOWN_CHARS else f"{literal[:SHOWN_CHARS]}... ({len(literal)} characters)"


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidRequest("body", f"the number {_shown(literal)} is out of range; numbers must be finite")
    return value


def _bounded_int(literal: str) -> int:
    # Python refuses to convert longer literals with a ValueError (CVE-2020-10735): say so as a 400 first.
    limit = sys.get_int_max_str_digits()
    digits = len(literal.lstrip("-"))
    if limit and digits > limit:
        raise InvalidRequest("body", f"has an integer of {digits} digits; at most {limit} are read")
    return int(literal)


def parse_json_object(body: bytes | bytearray) -> dict[str, Any]:
    """The body as a JSON object, or InvalidRequest naming `body` (or the duplicated key)."""
    try:
        data = json.loads(
            bytes(body).decode("utf-8"),  # json.loads(bytes) would also read UTF-16 and UTF-32 bodies
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("body", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    except ValueError as exc:  # anything else the decoder raises is still the client's body
        raise InvalidRequest("body", f"is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", "must be a JSON object")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "body", "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode"
        ) from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    return data
