"""The pure rules of the join: no faust, Kafka, I/O or clock (a test holds them to that)."""
