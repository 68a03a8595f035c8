"""Errors raised by the local stack, one root so callers can catch them all.

StackError            anything that stops the local stack from coming up or going down
├── MissingTool       a program (java, mvn, redis-server, ...) is not installed; the message
│                     says what to install.  The CLI turns it into exit code 2.
├── PortInUse         the port a service should listen on is taken by another process
└── StartupError      the service was launched but died or never became ready; the message
                      ends with the tail of its log so the cause is visible without digging
"""

from __future__ import annotations


class StackError(RuntimeError):
    """Root of every error the local stack raises."""


class MissingTool(StackError):
    """A required program is missing; ``str(err)`` is a one-line hint on what to install."""


class PortInUse(StackError):
    """Another process already listens on the port a service needs."""

    def __init__(self, service: str, host: str, port: int) -> None:
        super().__init__(f"{service} cannot listen on {host}:{port}: another process uses it")
        self.service = service
        self.port = port


class StartupError(StackError):
    """A service process exited or did not become ready in time."""
