"""The hand-off between the subscription callback and the inference worker.

The callback must return at once whatever the worker is doing, and memory must stay
bounded when frames arrive faster than they are processed: a slot holds only the newest
frame, and a frame that is replaced before the worker took it is counted as dropped.
"""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-element mailbox that keeps the newest item and counts the ones it replaced."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when an older, untaken item was dropped for it."""
        with self._cond:
            dropped = self._has_item
            if dropped:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` seconds; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting :meth:`take`; later takes return None at once."""
        with self._cond:
            self._closed = True
            self._item, self._has_item = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
