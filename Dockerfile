# Production image of Streamer.
#
#   docker build -t streamer .
#   web:    docker run -p 8000:8000 --env-file prod.env streamer
#           (uvicorn — websockets-sansio, uvloop, httptools — serving streaming.asgi:application on
#           0.0.0.0:8000; the choice is measured in docs/performance.md. The stock server:
#           ... streamer daphne --bind 0.0.0.0 --port 8000 --proxy-headers streaming.asgi:application)
#   worker: docker run --env-file prod.env streamer python manage.py process_requests
#   tables: docker run --env-file prod.env streamer python manage.py create_tables
#   schema: docker run --env-file prod.env streamer python manage.py migrate --noinput
#
# Set at least DJANGO_SECRET_KEY (required), ALLOWED_HOSTS, the HTTPS settings of README.md
# "Production settings", DATABASE_URL (PostgreSQL), REDIS_URL
# (when more than one process), STREAMER_JWT_SECRET or STREAMER_JWT_PUBLIC_KEY, AWS_REGION
# and AWS credentials (an IAM role is best). DynamoDB defaults to real AWS here.
# Static files (the admin's CSS) are collected into /app/var/static: serve /static/ from
# the load balancer or a CDN. Health check for the load balancer: GET /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=streaming.settings \
    DATA_DIR=/app/var \
    DYNAMODB_ENDPOINT_URL="" \
    DJANGO_DEBUG=0

# tini forwards SIGTERM to the server or worker and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 streamer \
    && useradd --system --uid 10001 --gid streamer --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin streamer

WORKDIR /app

# Dependencies first (pinned by constraints.txt), so code changes keep this layer cached.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY manage.py ./
COPY protocol ./protocol
COPY storage ./storage
COPY connections ./connections
COPY streaming ./streaming
# The JS client's source (its npm package, clients/js/) is served at /static/streaming/.
COPY clients/js/src ./clients/js/src

# A throw-away key: settings refuse to load without one, and collectstatic signs nothing.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /app/var \
    && chown -R streamer:streamer /app/var

USER streamer
EXPOSE 8000
ENTRYPOINT ["tini", "--"]
# --ws websockets-sansio: its send waits while a client does not read, which the 1 MiB output
# limit (close 4408) relies on, and it costs least per connection (docs/performance.md); no compression, so bytes counted are bytes on the wire; messages
# over 1 MiB close the socket with 1009, as under daphne (docs/protocol.md §2.1).
CMD ["uvicorn", "streaming.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio", \
     "--ws-per-message-deflate", "false", "--ws-max-size", "1048576", "--lifespan", "off", "--backlog", "2048", \
     "--proxy-headers", "--forwarded-allow-ips", "*", "--no-access-log"]
