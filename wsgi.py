"""Scale-out web entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (eventlet worker).

Workers are separate ``huey_consumer pixshift.worker.huey`` processes; this process serves pages, the API
and Socket.IO, and relays progress events from Redis to its own browsers.
"""

from pixshift import create_app, logs
from pixshift.web.realtime import start_relay

app = create_app({"ASYNC_MODE": "eventlet"})
logs.configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
start_relay(app)
