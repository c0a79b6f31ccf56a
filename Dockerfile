# privacy-gateway: only the runtime dependencies, in their own layer (rebuilt when
# pyproject.toml changes, not when the source does), then the gateway itself.
#
#   docker build -t privacy-gateway .
#   docker run --read-only --tmpfs /tmp \
#     -e GATEWAY_UPSTREAM=https://www.zohoapis.eu \
#     -v /path/to/secret:/run/secrets/gateway-secret:ro \
#     -p 8080:8080 privacy-gateway
#
# The audit trail goes to stdout (one JSON line per entry; signed checkpoints are entries of
# event "checkpoint" in the same stream), the logs to stderr (one JSON object per line).
# The secret must be given: GATEWAY_SECRET, or a file mounted at GATEWAY_SECRET_FILE. In
# this image (GATEWAY_IN_CONTAINER=1) serve refuses to generate one, since a new secret per
# container start would change every client fingerprint and checkpoint signature.
#
# Read-only root filesystem: nothing is written outside these paths, and only when used:
#   /var/lib/privacy-gateway   GATEWAY_AUDIT_LOG / GATEWAY_CHECKPOINT_FILE, if set (a volume)
#   /tmp                       PROMETHEUS_MULTIPROC_DIR, if set (a tmpfs)
# The redactor compiled with mypyc (gateway/compiled.py) by the mypy that CI tests the build
# with (pinned in pyproject's dev extra): the C compiler and mypy stay in this stage, the
# image takes the built package. A failed build fails the image build.
FROM python:3.11-slim AS compiled
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt "mypy==2.4.1" types-cachetools
COPY gateway ./gateway
RUN python -c "from gateway.compiled import build; raise SystemExit(build())"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_IN_CONTAINER=1 \
    GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8080 \
    GATEWAY_LOG_LEVEL=info \
    GATEWAY_DRAIN_TIMEOUT_SECONDS=10 \
    GATEWAY_POLICY=/etc/privacy-gateway/default.toml \
    GATEWAY_SECRET_FILE=/run/secrets/gateway-secret

RUN useradd --system --no-create-home --uid 10001 gateway \
 && mkdir -p /etc/privacy-gateway /var/lib/privacy-gateway \
 && chown gateway /var/lib/privacy-gateway

WORKDIR /src
# 1. the runtime dependencies alone ([project.dependencies]; no dev extras)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt
# 2. the gateway, with its compiled redactor (its dependencies are already there)
COPY README.md ./
COPY --from=compiled /src/gateway ./gateway
RUN pip install --no-deps . && rm -rf /src
COPY policies/default.toml /etc/privacy-gateway/default.toml

USER gateway
WORKDIR /var/lib/privacy-gateway
EXPOSE 8080
# liveness; /_gateway/ready is the readiness probe (503 while the CRM, the metadata or the
# audit sink is failing, and from the shutdown signal on)
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/_gateway/health' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"
ENTRYPOINT ["privacy-gateway"]
CMD ["serve"]
