"""keel's Kafka clients: their configuration, the producer, topic administration, topic names."""
