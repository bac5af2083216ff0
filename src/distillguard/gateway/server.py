"""uvicorn's httptools protocol with one change: a response's head and (first) body go out in one
``write``.

uvicorn writes the status line and headers when the app sends ``http.response.start`` and the body
on ``http.response.body``: two system calls and, usually, two TCP segments, so the client wakes up
twice per answer. Here the head is held back until the body arrives in the same step of the event
loop (the gateway always sends them back to back for whole answers), or sent at the next loop
iteration otherwise (a stream whose first chunk is still being generated).

Example (what ``distillguard gateway`` passes to uvicorn):

>>> import uvicorn
>>> cfg = uvicorn.Config(lambda scope, receive, send: None, http=CoalescingHttpToolsProtocol)
>>> cfg.http is CoalescingHttpToolsProtocol
True
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]


class _HeadHoldingTransport:
    """Wraps a transport for one request/response cycle: its first write (the head) waits for the next."""

    __slots__ = ("_t", "_loop", "_head")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._t = transport
        self._loop = loop
        self._head: bytes | None = b""  # b"": nothing written yet; None: the head has gone out

    def write(self, data: bytes) -> None:
        head = self._head
        if head is None:
            self._t.write(data)
        elif head == b"":
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._head = None
            self._t.write(head + data)

    def _flush(self) -> None:
        head = self._head
        if head:
            self._head = None
            if not self._t.is_closing():
                self._t.write(head)

    def close(self) -> None:
        self._flush()
        self._t.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _HeadHoldingTransport):
            cycle.transport = _HeadHoldingTransport(self.transport, self.loop)
