"""The HTTP protocol the server runs: uvicorn's httptools protocol with a deadline for the head.

uvicorn times out idle keep-alive connections, but not a connection that has not yet sent a
complete request head: 3,000 half-open connections (opened, a few bytes or nothing sent) stayed
open forever against `ranker serve`. Each connection here must complete its request line and
headers within ``HEAD_TIMEOUT_S`` of opening (or of its previous response), else it is closed.
The body has its own bound in the app (the size limit and the deadline of the request).

It also stamps each request's arrival (the moment its first bytes are parsed) into the ASGI
scope: when the event loop itself is the saturated resource, a request waits in the loop's
queue before any handler runs, and a deadline counted from the handler's start never sees that
wait (past saturation answers came 9 s after they were sent while the in-flight count stayed
under its limit). The app counts the deadline from this stamp and sheds a request that waited
too long before it is admitted.

And it hands each request the set of the server's open requests (`OPEN_REQUESTS`): a handler
that runs to its inference without waiting on anything (the embedded store's) is never in
flight beside another, though requests parsed meanwhile wait behind it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a connection may take to send a complete request head (``ranker serve
#: --head-timeout`` sets it through the environment, which each worker process inherits).
HEAD_TIMEOUT_S = float(os.environ.get("RANKER_HEAD_TIMEOUT_S", "10"))

#: ASGI scope key of a request's arrival (``time.perf_counter()`` when its head began to parse).
ARRIVED = "ranker.arrived"
#: ASGI scope key of the server's open requests: a set with one entry per request whose head is
#: parsed and whose handling has not ended, this one included (uvicorn's own task set).
OPEN_REQUESTS = "ranker.open_requests"


class HeadTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request head is late."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]
        self.scope[OPEN_REQUESTS] = self.tasks  # type: ignore[literal-required]

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # a kept-alive connection owes the next head in time too
