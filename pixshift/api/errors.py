"""Every API error is JSON with a stable ``error`` code; nothing leaks a stack trace."""
from __future__ import annotations

from flask import jsonify
from werkzeug.exceptions import HTTPException

from . import bp


def error_response(status: int, error: str, message: str, **extra):
    body = {"error": error, "message": message, **extra}
    return jsonify(body), status


def clean_text(value: object, limit: int) -> str | None:
    """A string fit to store: UTF-8 encodable, no NUL (PostgreSQL refuses it), at most ``limit``
    characters; None when ``value`` is not such a string."""
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        return None
    return value


def wants_html() -> bool:
    """Browsers get an error page; scripts (and fetch calls asking for JSON) get JSON."""
    from flask import request
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException):
    code = {413: "too_large", 404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(
        exc.code, (exc.name or "error").lower().replace(" ", "_"))
    message = exc.description or exc.name
    if exc.code == 413:
        from flask import current_app
        message = f"the upload is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    if wants_html():
        from flask import render_template
        return render_template("error.html", status=exc.code, message=message), exc.code or 500
    return error_response(exc.code or 500, code, message)


@bp.app_errorhandler(Exception)
def unexpected_error(exc: Exception):
    from flask import current_app
    current_app.logger.exception("unhandled error")
    message = "PixShift hit an unexpected error; it has been logged"
    if wants_html():
        from flask import render_template
        return render_template("error.html", status=500, message=message), 500
    return error_response(500, "internal_error", message)
