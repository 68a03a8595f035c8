"""The domain rules' parameters, read once from the settings (streams/config.py).

The handlers read them as module attributes at call time, so a test can run the join with
other limits or windows (tests/join_harness.py).
"""

from __future__ import annotations

from streams.app import settings
from streams.domain.links import Guards
from streams.domain.signals import Windows
from streams.domain.state import Limits

limits = Limits(
    keep_closed=settings.keep_closed,
    max_notes=settings.max_notes,
    keep_retired=settings.keep_retired,
)
windows = Windows(
    duplicate_order_ms=settings.duplicate_order_window_s * 1000,
    repeat_contact_ms=settings.repeat_contact_window_s * 1000,
    complaint_unresolved_ms=settings.complaint_unresolved_s * 1000,
    command_timeout_ms=settings.command_timeout_s * 1000,
)
guards = Guards(
    shared_after=settings.identity_shared_after, blocklist=settings.identity_blocklist
)
