# PromptProxy image: multi-stage, virtualenv, non-root (uid 1001), SQLite data on the /data volume.
# Build and run (never built in the development sandbox, which has no Docker engine: `make lint` runs hadolint on
# this file, and tests/ops/test_compose.py runs the entrypoint script with the ENV below, outside Docker):
#   docker build -t promptproxy .
#   docker run -p 8090:8090 -v pp-data:/data -e PROMPTPROXY_ENV=production \
#     -e PROMPTPROXY_SECRET_KEY=... -e PROMPTPROXY_ENCRYPTION_KEY=... promptproxy
# The entrypoint (deploy/docker-entrypoint.sh) runs `promptproxy db upgrade`, then execs `promptproxy serve` (SIGTERM
# drains, then flushes the log); given a command instead, it runs that: `docker run ... promptproxy create-admin ...`.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, in their own layer (a code change does not reinstall them), from the hash-locked file the
# Makefile installs too: a tampered or substituted package fails the build. The project itself adds none.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
# templates/ and static/ sit beside the package: an editable install keeps ROOT=/app so they resolve.
COPY app.py ./
COPY promptproxy ./promptproxy
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN pip install --no-deps -e . && python -m compileall -q promptproxy

FROM python:3.11-slim
RUN useradd --uid 1001 --no-create-home --shell /usr/sbin/nologin promptproxy \
    && mkdir /data && chown 1001:1001 /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --from=build /usr/local/bin/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PROMPTPROXY_INSTANCE_PATH=/data \
    PROMPTPROXY_HOST=0.0.0.0 \
    PROMPTPROXY_PORT=8090
WORKDIR /app
USER 1001
VOLUME ["/data"]
EXPOSE 8090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8090/readyz', timeout=2).status != 200)"]
ENTRYPOINT ["docker-entrypoint.sh"]
