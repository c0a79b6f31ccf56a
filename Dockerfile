# privacy-gateway: installs the package the same way the Makefile does (pip install .).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8080 \
    GATEWAY_POLICY=/etc/privacy-gateway/default.toml \
    GATEWAY_SECRET_FILE=/var/lib/privacy-gateway/.gateway-secret

RUN useradd --system --create-home --uid 10001 gateway \
 && mkdir -p /etc/privacy-gateway /var/lib/privacy-gateway \
 && chown gateway /var/lib/privacy-gateway

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir . && rm -rf /src
COPY policies/default.toml /etc/privacy-gateway/default.toml

USER gateway
WORKDIR /var/lib/privacy-gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/_gateway/health', timeout=2); sys.exit(0)"
ENTRYPOINT ["privacy-gateway"]
# Set GATEWAY_UPSTREAM (e.g. https://www.zohoapis.eu) when running; the audit trail goes to
# stdout unless GATEWAY_AUDIT_LOG names a file on a volume.
CMD ["serve"]
