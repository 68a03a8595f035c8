"""What the figures were measured on: the machine and the versions of everything involved."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "cpu_model": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
    }


def _dist(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _java() -> str | None:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else None


def versions(quix_version: str | None) -> dict[str, Any]:
    import confluent_kafka

    from deploy.local.provision import KAFKA_VERSION

    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "faust": _dist("faust-streaming"),
        "aiokafka": _dist("aiokafka"),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": _dist("fastavro"),
        "rocksdict": _dist("rocksdict"),
        "orjson": _dist("orjson"),
        "quixstreams": quix_version,
        "kafka": KAFKA_VERSION,
        "java": _java(),
        "py_spy": _dist("py-spy"),
    }
