"""The root of every exception keel's worker raises, and where each one lives.

Every exception class in ``streams/`` derives from :class:`KeelError`, so a caller can catch
all of keel's own errors at once (``except KeelError``) and tell them from a bug or a
library's error. Each class stays next to the code that raises it; those that callers have
always caught as ``ValueError`` or ``RuntimeError`` keep that base too. Library errors are
translated where keel calls the library (``raise DecodeError(reason) from exc``), so what
crosses a module boundary is one of these, with a reason a person can act on.

    KeelError
    ├── ConfigError (ValueError)         streams/config.py: a KEEL_* variable unknown or unusable
    ├── KafkaConfigError (ValueError)    streams/kafka/config.py: a KAFKA_* security variable
    ├── KafkaClientError (RuntimeError)  streams/kafka/config.py: Kafka refused a client
    │   ├── KafkaAuthError               streams/kafka/config.py: credentials or certificate
    │   ├── PublishError                 streams/kafka/producer.py: a record not published
    │   └── EmitError                    streams/worker/emit.py: a worker output not confirmed
    ├── TopicError (RuntimeError)        streams/kafka/admin.py: a topic keel cannot work with
    ├── CodecError                       streams/encoding/codec.py: a record does not fit its schema
    │   ├── UnknownSchemaError
    │   └── DecodeError
    ├── JsonFieldError (ValueError)      streams/encoding/jsonconv.py: a JSON field does not fit
    ├── Refused                          streams/domain/commands.py: a desk command refused (HTTP)
    ├── BadErasureRequest (ValueError)   streams/domain/erasure.py: an erasure that cannot be sent
    ├── QueryError (ValueError)          streams/domain/directory.py: a directory search refused
    ├── RejectedInput                    streams/worker/intake.py: an input record, dead-lettered
    ├── TooManySubscribers               streams/worker/live.py: too many live streams
    ├── DeadLetterError (RuntimeError)   streams/ops/deadletters.py: no such dead letter
    └── signals between two functions, never seen outside their module:
        Fallback, NotCompilable          streams/encoding/avro_writer.py
        Invalid                          streams/encoding/jsoncompile.py
        _Interrupted                     streams/worker/monitoring.py

connectors/ has its own root, ``connectors.errors.ConnectorError``.
"""

from __future__ import annotations

__all__ = ["KeelError"]


class KeelError(Exception):
    """Root of the exceptions keel's worker raises (the tree is in the module docstring)."""
