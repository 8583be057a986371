"""What PixShift accepts as an image or webhook URL: the one rule for the CSV, the upload form, webhook
registration and every connection (``outbound.validate_url``). Addresses are checked when connecting."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")  # \s is str.isspace(); a regex is 5x faster per URL


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched, in words for the person who wrote it; None when it can."""
    if len(url) <= MAX_URL_LENGTH and _PLAIN_URL.fullmatch(url):
        return None
    return _url_checks(url)


# A URL of this shape passes every one of _url_checks, so they are skipped for it: urlsplit was two
# thirds of the time to validate a big file. tests/test_csv_properties.py checks the shortcut never
# accepts a URL the checks refuse.
_PLAIN_URL = re.compile(r"[hH][tT][tT][pP][sS]?://[A-Za-z0-9.-]+(?::[0-9]{1,4})?(?:[/?#][^\s\x00-\x1f]*)?")


def _url_checks(url: str) -> str | None:
    if not url:
        return "empty (two commas in a row, or a trailing comma?)"
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    if _SPACE_OR_CONTROL.search(url):
        return f"{url[:80]!r} contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError:
        return f"{url[:80]!r} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"{url[:80]!r} is not an absolute http(s) URL"
    if parts.username is not None or parts.password is not None:
        return f"{url[:80]!r} contains credentials; PixShift does not send them"
    return None
