"""The API's own description: the OpenAPI 3.1 document at /openapi.json and Swagger UI at /docs.

The document is hand-written (``openapi.json`` beside this module); ``tests/test_openapi.py`` keeps it true
by validating real responses against it and fuzzing the running app from it with Schemathesis.
Swagger UI is bundled under ``static/vendor`` (no CDN) and started by a static script, so the
page runs under the same strict Content-Security-Policy as every other page.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from flask import Response, render_template

from pixshift.web.api.blueprint import bp

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"
SWAGGER_UI = "vendor/swagger-ui-5.35.0"


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    return json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _openapi_bytes() -> bytes:
    return json.dumps(openapi_document(), ensure_ascii=False, indent=2).encode()


@bp.get("/openapi.json")
def openapi_json():
    response = Response(_openapi_bytes(), mimetype="application/json")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Access-Control-Allow-Origin"] = "*"  # a public description; lets other tools' UIs read it
    return response


@bp.get("/docs")
def api_docs():
    return render_template("docs.html", swagger_ui=SWAGGER_UI)
