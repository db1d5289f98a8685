"""The app's JSON provider: a body no endpoint could use is refused as invalid JSON here,
once, for every `request.get_json()` and the API's body reader alike."""
from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider


class UnusableJSONError(ValueError):
    """Valid JSON syntax that still is no usable input (a ValueError, as json's own)."""


def is_text(value: str) -> bool:
    """False for a string holding a lone surrogate (U+D800–U+DFFF, e.g. from "\\ud800"):
    not a character, so no database column, email or page can carry it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_text(data: Any) -> bool:
    """Every key and string in `data` is text. A loop, not recursion: what json decoded
    can be nested nearly as deep as the recursion limit."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_text(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


class JSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            data = super().loads(s, **kwargs)
        except RecursionError:  # a 64 KiB body of "[[[[…" is deeper than json decodes
            raise UnusableJSONError("The JSON is nested too deeply.") from None
        if not _all_text(data):
            raise UnusableJSONError("The JSON holds a lone surrogate (an unpaired "
                                    "\\ud800–\\udfff escape), which is not a character.")
        return data
