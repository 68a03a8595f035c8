"""Run a Python program with its threads named for the OS, so their CPU can be told apart.

    python -m bench.threadnames -m streams worker      # = python -m streams worker
    python -m bench.threadnames path/to/script.py ARGS

CPython 3.11 leaves every thread it starts with the process's name in
``/proc/<pid>/task/<tid>/comm``; this sets each ``threading.Thread``'s name there (first 15
bytes, ``prctl(PR_SET_NAME)``) as the thread starts, then runs the program as ``python -m`` or
``python script.py`` would. One system call per thread started, nothing per event. The
benchmark starts the worker this way to split its CPU by thread (bench/worker.py
``thread_cpu``): the intake thread is ``keel-intake``, faust's consumer thread (its own event
loop fetching the internal topics for the join) ``faust-consumer``, another thread of a
``mode`` service its service's class; librdkafka names its own (``rdk:…``).
"""

from __future__ import annotations

import ctypes
import runpy
import sys
import threading

PR_SET_NAME = 15


def os_name(thread: threading.Thread) -> str:
    """The name a thread gets in ``comm``: its own, unless a ``mode`` service runs in it."""
    service = getattr(thread, "service", None)  # mode.threads.WorkerThread
    if service is None:
        return thread.name
    if any(c.__name__ == "ConsumerThread" for c in type(service).__mro__):
        return "faust-consumer"
    return type(service).__name__


def name_threads() -> None:
    """From now on every ``threading.Thread`` gives the OS its name when it starts."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: nothing to name
        return
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(self: threading.Thread) -> None:
        prctl(PR_SET_NAME, os_name(self).encode(errors="replace")[:15], 0, 0, 0)
        bootstrap(self)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        sys.exit("usage: python -m bench.threadnames (-m MODULE | SCRIPT) [ARGS...]")
    name_threads()
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]  # argv[0] becomes the module's file, as with -m
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
