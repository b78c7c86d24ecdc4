"""The one-slot mailbox between event-loop tasks: a put replaces what is there (counted); get waits; close ends it."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class MailboxClosed(Exception):
    """`get` on a mailbox that was closed (its reader ends, as a track ends)."""


class Mailbox(Generic[T]):
    """Newest wins: a put replaces an item not yet taken (counted as dropped); get waits for the next."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, item: T) -> bool:
        """Returns whether it replaced an item nobody took."""
        replaced = self._item is not None
        if replaced:
            self.dropped += 1
        self._item = item
        self._event.set()
        return replaced

    def close(self) -> None:
        """Wake the reader: this get and every later one raise `MailboxClosed` (an item not taken is dropped)."""
        self.closed = True
        self._event.set()

    async def get(self) -> T:
        await self._event.wait()
        if self.closed:
            raise MailboxClosed
        item, self._item = self._item, None
        self._event.clear()
        assert item is not None  # the event is set only by a put (of an item) or by close
        return item
