# The router as one container: ingest + delivery workers (`router serve`) on
# port 3000. Point REDIS_URL at your Redis; without it the embedded Valkey
# keeps its append-only file in /app/data (mount a volume there). Your
# routes: mount the folder holding your routes.yaml at /app/routes (a folder,
# not the file: docs/deployment.md, "Mounting routes.yaml").

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY plugins ./plugins
# More plugins, as pip requirements (names from an index, URLs, or paths
# under plugins/ of the build context), separated by spaces:
#   docker build --build-arg PLUGIN_REQUIREMENTS="router-slackish==1.2" .
# docs/deployment.md, "Plugins in the image".
ARG PLUGIN_REQUIREMENTS=""
# Wheels of the router, of every plugin this repository ships (each
# directory of plugins/: chatbot, whatsapp, twilio, telegram, amqp, nats,
# mqtt, and any you add there), of PLUGIN_REQUIREMENTS, and of their
# runtime dependencies only: no dev extras reach the image. The `otel`
# extra does: OpenTelemetry traces are one variable away
# (OTEL_EXPORTER_OTLP_ENDPOINT: docs/tracing.md), and nothing of it is
# imported while that is unset.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[otel]' ./plugins/*/ $PLUGIN_REQUIREMENTS

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 router
COPY --from=build /wheels /wheels
# Every wheel built above, and nothing from an index.
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
WORKDIR /app
COPY routes.yaml ./routes/
RUN mkdir -p /app/data && chown router:router /app/data
ENV PORT=3000 \
    ROUTES_FILE=/app/routes/routes.yaml \
    ROUTER_DATA_DIR=/app/data \
    PYTHONUNBUFFERED=1
USER router
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=2)"]
# SIGTERM: stop taking work, let in-flight deliveries finish (ROUTER_SHUTDOWN_GRACE), exit 0.
STOPSIGNAL SIGTERM
CMD ["router", "serve"]
