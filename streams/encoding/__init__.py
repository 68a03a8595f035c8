"""Bytes in and out: Avro single-object encoding, the Avro writer, JSON conversion."""
