"""A fast mock OpenAI upstream for benchmarks: asyncio protocol, minimal HTTP/1.1, keep-alive.

Serves POST /v1/chat/completions, /v1/completions (JSON or SSE) and /v1/embeddings,
plus GET /v1/models and GET /stats (request counters as JSON). Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

MAX_HEADER_BYTES = 64 * 1024
_TASKS: set[asyncio.Task] = set()
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}


class Config:
    """Timing and payload knobs for every response this mock sends."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.first_delay = args.first_delay_ms / 1000.0
        self.gap = args.gap_ms / 1000.0
        self.chunks = args.chunks
        self.latency = args.latency_ms / 1000.0
        self.embedding_dims = args.embedding_dims
        self.marker = args.marker.encode() if args.marker else b""


class Stats:
    """Counters served at GET /stats."""

    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self.streams_done = 0
        self.streams_active = 0
        self.streams_peak = 0
        self.marker_seen = 0
        self.connections = 0
        self.by_path: dict[str, int] = {}

    def as_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()


def _head(status: int, content_type: str, length: int | None, close: bool) -> bytes:
    """Build a status line and headers; chunked framing when length is None."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Content-Type: {content_type}"]
    if length is None:
        lines += ["Transfer-Encoding: chunked", "Cache-Control: no-cache"]
    else:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    """Frame one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _prompt_tokens(body: dict) -> int:
    """A cheap, deterministic token estimate: four bytes per token."""
    if "messages" in body:
        text = "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    else:
        text = str(body.get("prompt", body.get("input", "")))
    return max(1, len(text) // 4)


def chat_json(body: dict, chunks: int) -> bytes:
    """A non-streaming chat completion with usage."""
    return json.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "mock"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "tok " * chunks},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(_prompt_tokens(body), chunks),
        }
    ).encode()


def completion_json(body: dict, chunks: int) -> bytes:
    """A non-streaming legacy text completion with usage."""
    return json.dumps(
        {
            "id": "cmpl-mock",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "mock"),
            "choices": [{"index": 0, "text": "tok " * chunks, "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(_prompt_tokens(body), chunks),
        }
    ).encode()


def embeddings_json(body: dict, dims: int) -> bytes:
    """One fixed vector per input string."""
    inputs = body.get("input", "")
    if not isinstance(inputs, list):
        inputs = [inputs]
    vector = [round(0.001 * i, 3) for i in range(dims)]
    return json.dumps(
        {
            "object": "list",
            "model": body.get("model", "mock"),
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))],
            "usage": {"prompt_tokens": _prompt_tokens(body), "total_tokens": _prompt_tokens(body)},
        }
    ).encode()


def stream_events(body: dict, chat: bool, chunks: int) -> tuple[bytes, bytes, list[bytes]]:
    """Return the first event, the repeated middle event and the closing events of a stream."""
    model = body.get("model", "mock")
    created = int(time.time())
    if chat:
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model}
        first = _sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "tok "}}]})
        middle = _sse(base | {"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]})
        final = _sse(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    else:
        base = {"id": "cmpl-mock", "object": "text_completion", "created": created, "model": model}
        first = _sse(base | {"choices": [{"index": 0, "text": "tok ", "finish_reason": None}]})
        middle = first
        final = _sse(base | {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    closing = [final]
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        closing.append(_sse(base | {"choices": [], "usage": _usage(_prompt_tokens(body), chunks)}))
    closing.append(b"data: [DONE]\n\n")
    return first, middle, closing


class MockProtocol(asyncio.Protocol):
    """One client connection: parse requests in order, answer each, keep the connection open."""

    def __init__(self, config: Config, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a streamed response is in flight; later requests wait in buf

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        """Answer every complete request in the buffer, stopping at a streamed one."""
        while self.transport is not None and not self.busy:
            request = self._parse()
            if request is None:
                return
            self._dispatch(*request)

    def _parse(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """Take one complete request off the buffer, or None if more bytes are needed."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                self._reply(413, b'{"error":"headers too large"}', close=True)
            return None
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            self._reply(400, b'{"error":"bad request line"}', close=True)
            return None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, consumed = _dechunk(self.buf, start)
            if body is None:
                return None
            del self.buf[:consumed]
        else:
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < start + length:
                return None
            body = bytes(self.buf[start : start + length])
            del self.buf[: start + length]
        return method, target, headers, body

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        """Route one request to its handler."""
        stats, config = self.stats, self.config
        path = target.split("?", 1)[0]
        close = headers.get("connection", "").lower() == "close"
        stats.requests += 1
        stats.by_path[path] = stats.by_path.get(path, 0) + 1
        if method == "GET":
            if path == "/stats":
                self._reply(200, stats.as_json(), close)
            elif path == "/v1/models":
                self._reply(200, b'{"object":"list","data":[{"id":"mock","object":"model"}]}', close)
            else:
                self._reply(404, b'{"error":{"message":"not found"}}', close)
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            self._reply(404 if method == "POST" else 405, b'{"error":{"message":"not found"}}', close)
            return
        if config.marker and config.marker in body:
            stats.marker_seen += 1
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._reply(400, b'{"error":{"message":"invalid JSON"}}', close)
            return
        if path == "/v1/embeddings":
            self._reply_later(embeddings_json(payload, config.embedding_dims), close)
        elif payload.get("stream"):
            self.busy = True
            task = asyncio.get_running_loop().create_task(self._stream(payload, path == "/v1/chat/completions", close))
            _TASKS.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(_TASKS.discard)
        elif path == "/v1/chat/completions":
            self._reply_later(chat_json(payload, config.chunks), close)
        else:
            self._reply_later(completion_json(payload, config.chunks), close)

    def _reply(self, status: int, body: bytes, close: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(_head(status, "application/json", len(body), close) + body)
        if close:
            self.transport.close()
            self.transport = None

    def _reply_later(self, body: bytes, close: bool) -> None:
        """Answer at once, or after --latency-ms without blocking the connection's loop."""
        if not self.config.latency:
            self._reply(200, body, close)
            return
        self.busy = True

        def send() -> None:
            self.busy = False
            self._reply(200, body, close)
            self._drain()

        asyncio.get_running_loop().call_later(self.config.latency, send)

    async def _stream(self, payload: dict, chat: bool, close: bool) -> None:
        """Send an SSE body in chunked framing with the configured delays."""
        config, stats = self.config, self.stats
        stats.streams += 1
        stats.streams_active += 1
        stats.streams_peak = max(stats.streams_peak, stats.streams_active)
        first, middle, closing = stream_events(payload, chat, config.chunks)
        try:
            transport = self.transport
            if transport is None:
                return
            transport.write(_head(200, "text/event-stream", None, close))
            if config.first_delay:
                await asyncio.sleep(config.first_delay)
            for i in range(config.chunks):
                if self.transport is None:
                    return
                if i:
                    if config.gap:
                        await asyncio.sleep(config.gap)
                    self.transport.write(_chunk(middle))
                else:
                    self.transport.write(_chunk(first))
            if self.transport is None:
                return
            self.transport.write(_chunk(b"".join(closing)) + b"0\r\n\r\n")
            stats.streams_done += 1
            if close:
                self.transport.close()
                self.transport = None
        finally:
            stats.streams_active -= 1
            self.busy = False
        self._drain()


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes | None, int]:
    """Decode a chunked request body starting at pos; (None, 0) when incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None, 0
            return bytes(out), trailer_end + 4
        if len(buf) < pos + size + 2:
            return None, 0
        out += buf[pos : pos + size]
        pos += size + 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--first-delay-ms", type=float, default=0.0, help="delay before the first SSE chunk")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="delay between SSE chunks")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream (and tokens)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay for non-streaming answers")
    parser.add_argument("--embedding-dims", type=int, default=16)
    parser.add_argument("--marker", default="", help="count requests whose body contains this text")
    parser.add_argument("--backlog", type=int, default=2048)
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    config, stats = Config(args), Stats()
    server = await loop.create_server(
        lambda: MockProtocol(config, stats), args.host, args.port, backlog=args.backlog, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream listening on http://{args.host}:{args.port} pid={os.getpid()}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
