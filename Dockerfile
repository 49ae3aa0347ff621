# Production image: the proxy only, writing shares to a ClickHouse server.
# It carries no embedded ClickHouse (chdb, ~100 MB and meant for single hosts and
# tests), so TPROXY__CLICKHOUSE__URL must name a server: with the config's default
# chdb:// URL the entry point refuses to start with one line saying so (exit 2),
# instead of spooling every share while reporting healthy.
# Build: docker build -t tproxy .   Run: see docker-compose.yml.
# Only sv2/, tproxy/, monitoring/ are installed: devnet/ (dev pool, synthetic
# miners, demo), tests and benchmarks stay out of the image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sv2 sv2
COPY tproxy tproxy
COPY monitoring monitoring
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/tproxy tproxy \
 && mkdir -p /var/lib/tproxy/spool /etc/tproxy && chown -R tproxy /var/lib/tproxy
COPY --from=build /install /usr/local
COPY config-examples/tproxy.toml /etc/tproxy/tproxy.toml
COPY docker/entrypoint.py docker/healthcheck.py /usr/local/lib/tproxy-image/
USER tproxy
WORKDIR /var/lib/tproxy
# The monitoring server listens on every interface inside the container (compose
# publishes it on the host's loopback only). The health probe follows
# TPROXY__MONITORING__PORT / the config's [monitoring] port.
ENV TPROXY_CONFIG=/etc/tproxy/tproxy.toml \
    TPROXY__DOWNSTREAM__ADDRESS=0.0.0.0 \
    TPROXY__MONITORING__ENABLED=true \
    TPROXY__MONITORING__ADDRESS=0.0.0.0 \
    TPROXY__CLICKHOUSE__SPOOL_DIR=/var/lib/tproxy/spool
EXPOSE 34255 9092
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/usr/local/lib/tproxy-image/healthcheck.py"]
ENTRYPOINT ["python", "/usr/local/lib/tproxy-image/entrypoint.py"]
CMD ["run"]
