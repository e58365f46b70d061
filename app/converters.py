"""URL converters: job and file ids are accepted in one canonical spelling only.

Werkzeug's ``uuid`` converter matches upper-case hex too, so ``/api/v1/jobs/ABC…`` and
``/api/v1/jobs/abc…`` were the same resource under two URLs (two cache entries, two
log spellings, ids compared as strings by clients). This converter replaces it under
the same name, so every ``<uuid:…>`` rule matches only the form ``str(uuid.UUID(x))``
produces: 36 characters, lower-case hex, hyphens at 8-4-4-4-12. Anything else is not
a route: 404 ``not_found``.
"""

from __future__ import annotations

import uuid

from flask import Flask
from werkzeug.routing import BaseConverter

CANONICAL_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class CanonicalUUIDConverter(BaseConverter):
    """``<uuid:name>``: a lower-case, hyphenated UUID, passed to the view as :class:`uuid.UUID`."""

    regex = CANONICAL_UUID

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: uuid.UUID | str) -> str:
        return str(uuid.UUID(str(value)))


def init_app(app: Flask) -> None:
    """Register the converter as ``uuid``; call before any blueprint adds its rules."""
    app.url_map.converters["uuid"] = CanonicalUUIDConverter
