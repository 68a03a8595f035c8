"""Every exception keel raises has its package's root, and no two classes share a name.

streams/errors.py and connectors/errors.py list the trees; these tests walk every module so a
new exception class that forgets its root, or a second class named like an existing one (a
reader greps for ``Rejected`` and must find one thing), fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict
from types import ModuleType

import connectors
import streams
from connectors.errors import ConnectorError
from streams.errors import KeelError


def _modules(package: ModuleType) -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return [importlib.import_module(n) for n in names if not n.endswith("__main__")]


def _classes(package: ModuleType) -> list[type]:
    return [
        obj
        for module in _modules(package)
        for obj in vars(module).values()
        if inspect.isclass(obj) and obj.__module__ == module.__name__
    ]


def test_every_exception_of_streams_derives_from_keel_error() -> None:
    errors = [c for c in _classes(streams) if issubclass(c, BaseException)]
    assert len(errors) >= 15  # the walk found them
    assert [c.__qualname__ for c in errors if not issubclass(c, KeelError)] == []


def test_every_exception_of_connectors_derives_from_connector_error() -> None:
    errors = [c for c in _classes(connectors) if issubclass(c, BaseException)]
    assert len(errors) >= 5
    assert [c.__qualname__ for c in errors if not issubclass(c, ConnectorError)] == []


def test_errors_callers_catch_as_builtins_keep_those_bases() -> None:
    from streams.config import ConfigError
    from streams.domain.erasure import BadErasureRequest
    from streams.encoding.jsonconv import JsonFieldError
    from streams.kafka.admin import TopicError
    from streams.kafka.config import KafkaClientError, KafkaConfigError
    from streams.ops.deadletters import DeadLetterError
    from streams.worker.emit import EmitError

    for error in (ConfigError, KafkaConfigError, JsonFieldError, BadErasureRequest):
        assert issubclass(error, ValueError) and issubclass(error, KeelError)
    for error in (KafkaClientError, EmitError, TopicError, DeadLetterError):
        assert issubclass(error, RuntimeError) and issubclass(error, KeelError)


def test_no_two_public_classes_of_streams_and_connectors_share_a_name() -> None:
    where: dict[str, set[str]] = defaultdict(set)
    for package in (streams, connectors):
        for c in _classes(package):
            if not c.__name__.startswith("_"):
                where[c.__name__].add(c.__module__)
    assert {name: mods for name, mods in where.items() if len(mods) > 1} == {}
