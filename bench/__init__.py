"""keel's benchmarks: throughput, freshness, query latency and recovery (``python -m bench``)."""
