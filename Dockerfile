# Production image: the proxy only, writing shares to a ClickHouse server
# (no embedded engine; set TPROXY__CLICKHOUSE__URL). Build: docker build -t tproxy .
# devnet/ (dev pool, synthetic miner, demo) is not copied: the image has no
# `tproxy pool | demo | miner`; tproxy/cli.py skips their entry points quietly.
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
USER tproxy
WORKDIR /var/lib/tproxy
ENV TPROXY__DOWNSTREAM__ADDRESS=0.0.0.0 \
    TPROXY__MONITORING__ENABLED=true \
    TPROXY__MONITORING__ADDRESS=0.0.0.0 \
    TPROXY__CLICKHOUSE__SPOOL_DIR=/var/lib/tproxy/spool
EXPOSE 34255 9092
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9092/health',timeout=2).status==200 else 1)"
ENTRYPOINT ["tproxy", "run", "--config", "/etc/tproxy/tproxy.toml"]
