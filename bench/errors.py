"""The benchmark's one error root: a step could not be carried out (a process died, a deadline
passed, Kafka refused something). A failed phase is recorded in the results as ``error``."""


class BenchError(RuntimeError):
    """A benchmark step could not be carried out."""
