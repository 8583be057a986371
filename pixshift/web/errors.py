"""The errors blueprint: every failure becomes JSON with a stable ``error`` code for API clients,
or an error page for a browser; nothing leaks a stack trace.

Services and routes raise (``pixshift.failures``); this is the only place that turns a failure
into a response.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from pixshift.failures import Conflict, Failure, InvalidInput, NotAuthenticated, NotFinished, NotFound, Unavailable
from pixshift.uploads.csv_input import CsvRejected

bp = Blueprint("errors", __name__)

_STATUS: dict[type[Failure], int] = {
    InvalidInput: 400,
    NotAuthenticated: 401,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
}
_RETRY_AFTER = {NotFinished: "5", Unavailable: "10"}
_HTTP_CODES = {413: "too_large", 404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


def error_response(status: int, error: str, message: str, **extra: object):
    """The JSON error body every API error has: ``{"error", "message", ...}``."""
    return jsonify({"error": error, "message": message, **extra}), status


def wants_html() -> bool:
    """Browsers get an error page; scripts (and fetch calls asking for JSON) get JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _respond(status: int, code: str, message: str, **extra: object):
    if wants_html():
        return render_template("error.html", status=status, message=message), status
    return error_response(status, code, message, **extra)


@bp.app_errorhandler(Failure)
def failure(exc: Failure):
    status = next((s for kind, s in _STATUS.items() if isinstance(exc, kind)), 500)
    extra: dict = {}
    if isinstance(exc, InvalidInput):
        extra = {**({"details": exc.details} if exc.details is not None else {}), **exc.extra}
    response, status = _respond(status, exc.code, exc.message, **extra)
    response = current_app.make_response((response, status))
    if retry_after := next((v for kind, v in _RETRY_AFTER.items() if isinstance(exc, kind)), None):
        response.headers["Retry-After"] = retry_after
    if isinstance(exc, NotAuthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="pixshift"'
    return response


@bp.app_errorhandler(CsvRejected)
def csv_rejected(exc: CsvRejected):
    return _respond(
        400,
        "invalid_csv",
        "the CSV was not accepted; nothing was stored",
        details=[p.as_dict() for p in exc.problems],
        truncated=exc.truncated,
    )


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException):
    code = _HTTP_CODES.get(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"))
    message = exc.description or exc.name
    if exc.code == 413:
        message = f"the upload is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    return _respond(exc.code or 500, code, message)


@bp.app_errorhandler(Exception)
def unexpected_error(exc: Exception):
    current_app.logger.exception("unhandled error")
    return _respond(500, "internal_error", "PixShift hit an unexpected error; it has been logged")
