"""A small, fast fake OpenAI-compatible server for tests and benchmarks.

Raw ``asyncio`` HTTP/1.1 with keep-alive (no framework), so that it costs far less than the proxy it
is used to measure. Behaviour is chosen by the request's ``model``:

- ``"slow-<ms>"``: wait that many milliseconds before answering;
- ``"error-<status>"``: answer with that HTTP status and an OpenAI-style error body;
- ``"drop"``: close the connection without answering;
- anything else: a canned completion (``"stream": true`` gives server-sent events, 5 chunks by
  default, ``"fake_chunks"``/``"fake_chunk_delay_ms"`` in the body change that).

``GET /_stats`` returns ``{"requests": n, "streams_cancelled": n, "last_body": {...},
"last_headers": {...}}`` so tests can see what reached the upstream.

Example:

>>> srv = FakeUpstream()
>>> srv = srv.start()
>>> import httpx
>>> httpx.post(srv.url + "/v1/chat/completions", json={"model": "m", "messages": []}).json()["object"]
'chat.completion'
>>> srv.stop()
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import orjson

__all__ = ["FakeUpstream", "serve_forever"]


def _completion(body: dict, endpoint: str) -> dict:
    model = body.get("model", "fake")
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    if endpoint.endswith("/embeddings"):
        inp = body.get("input")
        items = inp if isinstance(inp, list) else [inp]
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(items))],
            "model": model,
            "usage": {"prompt_tokens": 3 * len(items), "total_tokens": 3 * len(items)},
        }
    if endpoint.endswith("/responses"):
        return {
            "id": "resp_fake",
            "object": "response",
            "model": model,
            "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello there."}]}],
            "output_text": "Hello there.",
            "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
        }
    usage = {"prompt_tokens": 7, "completion_tokens": 3 * n, "total_tokens": 7 + 3 * n}
    if endpoint.endswith("/completions") and not endpoint.endswith("/chat/completions"):
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 1767225600,
            "model": model,
            "choices": [{"index": i, "text": "Hello there.", "finish_reason": "stop"} for i in range(n)],
            "usage": usage,
        }
    choice: dict[str, Any] = {"message": {"role": "assistant", "content": "Hello there."}, "finish_reason": "stop"}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": [{"token": "Hello", "logprob": -0.1, "top_logprobs": []}]}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [dict(choice, index=i) for i in range(n)],
        "usage": usage,
    }


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams_cancelled = 0
        self.streams_completed = 0
        self.last_body: Any = None
        self.last_headers: dict[str, str] = {}


class _Proto(asyncio.Protocol):
    def __init__(self, stats: _Stats):
        self.stats = stats
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        while self.task is None or self.task.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._handle(method, path, headers, body)

    def _send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, ctype.encode(), len(payload))
            + payload
        )

    def _handle(self, method: str, path: str, headers: dict, raw: bytes) -> None:
        path = path.split("?", 1)[0]
        if path == "/_stats":
            s = self.stats
            self._send(200, orjson.dumps({"requests": s.requests, "streams_cancelled": s.streams_cancelled,
                                          "streams_completed": s.streams_completed,
                                          "last_body": s.last_body, "last_headers": s.last_headers}))
            return
        self.stats.requests += 1
        self.stats.last_headers = headers
        if path.endswith("/models") and method == "GET":
            self._send(200, b'{"object":"list","data":[{"id":"fake","object":"model","owned_by":"fake"}]}')
            return
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {}
        self.stats.last_body = body
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        if model == "drop":
            assert self.transport is not None
            self.transport.close()
            return
        if model.startswith("error-"):
            status = int(model.split("-", 1)[1])
            self._send(status, orjson.dumps({"error": {"message": f"fake upstream error {status}",
                                                       "type": "upstream", "code": str(status)}}))
            return
        if model.startswith("slow-") or body.get("stream") is True:
            self.task = asyncio.ensure_future(self._slow_or_stream(path, body, model))
            return
        self._send(200, orjson.dumps(_completion(body, path)))

    async def _slow_or_stream(self, path: str, body: dict, model: str) -> None:
        assert self.transport is not None
        try:
            if model.startswith("slow-"):
                await asyncio.sleep(int(model.split("-", 1)[1]) / 1000)
            if body.get("stream") is not True:
                if not self.closed:
                    self._send(200, orjson.dumps(_completion(body, path)))
                return
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            chunks = int(body.get("fake_chunks", 5))
            delay = float(body.get("fake_chunk_delay_ms", 0)) / 1000
            is_chat = path.endswith("/chat/completions")
            for i in range(chunks):
                if delay:
                    await asyncio.sleep(delay)
                if self.closed:
                    raise asyncio.CancelledError
                if is_chat:
                    delta = {"role": "assistant", "content": f"w{i} "} if i == 0 else {"content": f"w{i} "}
                    ev = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1767225600,
                          "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                else:
                    ev = {"id": "cmpl-fake", "object": "text_completion", "created": 1767225600, "model": model,
                          "choices": [{"index": 0, "text": f"w{i} ", "finish_reason": None}]}
                self._chunk(b"data: " + orjson.dumps(ev) + b"\n\n")
            last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1767225600, "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}] if is_chat else
                    [{"index": 0, "text": "", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": chunks, "total_tokens": 7 + chunks}}
            self._chunk(b"data: " + orjson.dumps(last) + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self.transport.write(b"0\r\n\r\n")
            self.stats.streams_completed += 1
        except asyncio.CancelledError:
            self.stats.streams_cancelled += 1
        finally:
            self.task = None
            if self.buf and not self.closed:
                self._parse()

    def _chunk(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))


async def serve_forever(host: str = "127.0.0.1", port: int = 0, ready: Any = None) -> None:
    """Run the fake server until cancelled; ``ready(port, stats)`` is called once it listens."""
    stats = _Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Proto(stats), host, port, backlog=1024)
    if ready is not None:
        ready(server.sockets[0].getsockname()[1], stats)
    async with server:
        await server.serve_forever()


class FakeUpstream:
    """The fake server on a background thread: ``start()``, ``url``, ``stats``, ``stop()``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.stats: _Stats | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "FakeUpstream":
        started = threading.Event()

        def ready(port: int, stats: _Stats) -> None:
            self.port, self.stats = port, stats
            started.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._task = self._loop.create_task(serve_forever(self.host, self.port, ready))
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(5)


def main() -> None:  # pragma: no cover - used as ``python -m distillguard.gateway.fakeupstream PORT``
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    def ready(p: int, _s: Any) -> None:
        print(f"listening {p}", flush=True)

    asyncio.run(serve_forever("127.0.0.1", port, ready))


if __name__ == "__main__":  # pragma: no cover
    main()

