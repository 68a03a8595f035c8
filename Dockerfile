# keel: the stream worker (default) and the connectors, in one image.
#
#   docker build -t keel .
#   docker run --rm -e KAFKA_BOOTSTRAP=kafka:9092 -p 6066:6066 keel            # a worker
#   docker run --rm --entrypoint python keel -m connectors.sources.http_ingest  # a connector
#
# deploy/compose/docker-compose.yml and deploy/k8s/ run it like that.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install .

# The Avro schemas are read from <source tree>/schemas, next to streams/, which the installed
# package in site-packages does not have: run keel from /app, for `python -m` and `keel` alike.
ENV PYTHONPATH=/app

RUN useradd --system --uid 10001 --home-dir /app keel \
    && mkdir -p /data && chown keel /data
USER keel

# RocksDB tables live in /data: mount a volume there so a restart does not restore every
# table from Kafka. The API must bind to all interfaces for other workers and Prometheus.
ENV KEEL_DATA_DIR=/data \
    KEEL_API_BIND=0.0.0.0
EXPOSE 6066
VOLUME ["/data"]

ENTRYPOINT ["python", "-m", "streams"]
CMD ["worker"]
