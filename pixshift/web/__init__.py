"""The web layer: the blueprints (pages, JSON API, downloads, errors), the Socket.IO relay, tokens
and security headers. It turns HTTP into calls of the layers below and their exceptions into
responses; no blueprint imports another."""
