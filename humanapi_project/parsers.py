"""Request body parsing that answers hostile input with a 400."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError


def storable_text(data: Any) -> bool:
    """Whether every string in parsed JSON can be encoded as UTF-8. A `\\ud800` escape decodes
    to a lone surrogate, which no hash, database column or log line can take: deep inside a view
    that would be a 500."""
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError, ValueError):
        return False
    return True


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: a body nested deeper than Python's recursion limit (a few
    hundred kilobytes of `[`), or with text that is not valid Unicode, is a 400, not a 500."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        if not storable_text(data):
            raise ParseError("JSON parse error - a string is not valid Unicode (an unpaired surrogate escape)")
        return data


class StrictCharField(serializers.CharField):
    """A CharField that takes JSON text only: DRF's would turn a number into text (`0` -> "0"),
    accepting a body the schema refuses. Form-encoded values are text already."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class UserIdField(serializers.CharField):
    """An app's id for one of its users: text, or a whole number (apps often send their own
    numeric ids as JSON numbers, and Human API's clients pass them through), kept as its decimal
    text. Anything else (true, 1.5, an object) is refused."""

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, int) and not isinstance(data, bool):
            data = str(data)
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
