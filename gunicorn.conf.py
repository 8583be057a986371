"""gunicorn settings for PixShift's web process (scale-out)."""

from pixshift import logs
from pixshift.config import settings

_config = settings()

bind = f"{_config.HOST}:{_config.PORT}"
# Flask-SocketIO needs an async worker for WebSockets; one eventlet worker serves thousands of
# connections. More web capacity = more gunicorn instances behind a load balancer with sticky
# sessions (Socket.IO's Redis message queue keeps them in step).
worker_class = "eventlet"
workers = 1
worker_connections = 1000
timeout = 60
graceful_timeout = 20
# gunicorn's own lines and its access log go through PixShift's handler: every line the process
# writes is one record in PIXSHIFT_LOG_FORMAT (text, or one JSON object a line).
logs.configure(_config.LOG_FORMAT, _config.LOG_LEVEL)
logger_class = logs.GunicornLogger
loglevel = _config.LOG_LEVEL.lower()
accesslog = "-"
# gunicorn 25's control socket lives in one per-user path, shared by every gunicorn of the user:
# a second web process on the machine would take it over. Nothing here uses it.
control_socket_disable = True
