# PixShift: one image for the web process, the workers and the migration step.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY pixshift/ pixshift/
COPY migrations/ migrations/
COPY wsgi.py gunicorn.conf.py ./

RUN useradd --create-home pixshift && mkdir -p /data/media && chown -R pixshift /data
USER pixshift
ENV HOST=0.0.0.0 PORT=8000 MEDIA_ROOT=/data/media PIXSHIFT_INSTANCE_PATH=/data/instance
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
