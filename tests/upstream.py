"""A real local upstream HTTP server for end-to-end tests: OpenAI-style by default, scriptable per test."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_response(model: str, content: str = "Bonjour!", usage: dict | None = None) -> dict:
    """A chat.completion body."""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def chunk(model: str, content: str | None = None, finish: str | None = None, role: bool = False) -> dict:
    """A chat.completion.chunk body."""
    delta = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def responses_answer(model: str, text: str = "Bonjour!", usage: dict | None = None) -> dict:
    """A completed Response object, as an upstream speaking the Responses API returns it."""
    return {
        "id": "resp_upstream_1", "object": "response", "created_at": 1700000000, "status": "completed",
        "model": model, "store": False,
        "output": [{"type": "message", "id": "msg_upstream_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": usage or {"input_tokens": 13, "output_tokens": 5, "total_tokens": 18,
                           "input_tokens_details": {"cached_tokens": 0},
                           "output_tokens_details": {"reasoning_tokens": 0}},
    }


def responses_events(model: str, parts=("Bon", "jour", "!")) -> list[dict]:
    """The event sequence of a streamed Response with one text message."""
    final = responses_answer(model, "".join(parts))
    running = {**final, "status": "in_progress", "output": [], "usage": None}
    item = {"type": "message", "id": "msg_upstream_1", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_upstream_1", "output_index": 0, "content_index": 0}
    events = [{"type": "response.created", "response": running},
              {"type": "response.in_progress", "response": running},
              {"type": "response.output_item.added", "output_index": 0, "item": item},
              {"type": "response.content_part.added", **where, "part": part}]
    events += [{"type": "response.output_text.delta", **where, "delta": t} for t in parts]
    events += [{"type": "response.output_text.done", **where, "text": "".join(parts)},
               {"type": "response.content_part.done", **where, "part": final["output"][0]["content"][0]},
               {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
               {"type": "response.completed", "response": final}]
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def responses_sse(events) -> list[str]:
    """SSE frames with `event:` lines, as OpenAI streams Responses events."""
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


class _Server(ThreadingHTTPServer):
    """A listen backlog large enough for hundreds of simultaneous connections (the default is 5)."""

    request_queue_size = 1024
    daemon_threads = True


class Upstream:
    """Records every request; answers by `self.handler(req)` -> (status, headers, body-bytes or iterator)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.handler = self.default
        self.delay = 0.0
        self.disconnects = 0
        self.epoch = 0  # which test's requests these are: reset() starts the next (the server is shared)
        self.stopped = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY the body waited for the client's
            # delayed ACK of the headers, ~40 ms per answer on a keep-alive connection (real servers set it too).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                req = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body,
                       "raw": raw}
                epoch = outer.epoch
                outer.requests.append(req)
                if outer.delay:
                    time.sleep(outer.delay)
                if outer.epoch != epoch:  # an earlier test's request, still sleeping when the next test began
                    self.close_connection = True
                    return
                status, headers, payload = outer.handler(req)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if isinstance(payload, bytes | str):
                    data = payload.encode() if isinstance(payload, str) else payload
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    try:
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):  # the gateway gave up waiting
                        outer.disconnected(epoch)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for part in payload:
                        if part is None:  # abort the connection mid-stream
                            self.wfile.flush()
                            self.connection.shutdown(2)
                            return
                        if isinstance(part, int | float):
                            time.sleep(part)
                            continue
                        data = part.encode() if isinstance(part, str) else part
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    outer.disconnected(epoch)

            do_POST = do_GET = _serve

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self._attributes = set(vars(self)) | {"_attributes"}

    def default(self, req):
        """OpenAI-like answers for chat, completions, embeddings, with SSE when asked."""
        body = req["body"] or {}
        model = body.get("model", "?")
        path = req["path"]
        if path.endswith("/embeddings"):
            inputs = body.get("input")
            n = len(inputs) if isinstance(inputs, list) else 1
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)],
                "usage": {"prompt_tokens": 5, "total_tokens": 5}})
        if path.endswith("/responses"):
            if body.get("stream"):
                return 200, {"Content-Type": "text/event-stream"}, iter(responses_sse(responses_events(model)))
            return 200, {"Content-Type": "application/json"}, json.dumps(responses_answer(model))
        if path.endswith("/completions") and "chat" not in path:
            if body.get("stream"):
                return 200, {"Content-Type": "text/event-stream"}, self.sse([
                    {"id": "cmpl-1", "object": "text_completion", "model": model,
                     "choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in ("Hel", "lo")
                ], body, model)
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "id": "cmpl-1", "object": "text_completion", "created": 1, "model": model,
                "choices": [{"index": 0, "text": "Hello", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}})
        if body.get("stream"):
            chunks = [chunk(model, "", role=True)] + [chunk(model, t) for t in ("Bon", "jour", "!")]
            chunks.append(chunk(model, finish="stop"))
            return 200, {"Content-Type": "text/event-stream"}, self.sse(chunks, body, model)
        return 200, {"Content-Type": "application/json", "x-ratelimit-remaining-requests": "99"}, \
            json.dumps(chat_response(model))

    @staticmethod
    def sse(chunks, body, model, gap: float = 0.0):
        """Frames for the chunks, a usage chunk if asked, and [DONE]."""
        def gen():
            for c in chunks:
                if gap:
                    yield gap
                yield f"data: {json.dumps(c)}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "model": model,
                                             "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3,
                                                                      "total_tokens": 14}}) + "\n\n"
            yield "data: [DONE]\n\n"
        return gen()

    def disconnected(self, epoch: int) -> None:
        """Count a client that went away mid-answer, if it was the current test's."""
        if epoch == self.epoch:
            self.disconnects += 1

    def reset(self) -> Upstream:
        """Forget what earlier tests recorded and configured: a module's tests share one server."""
        self.epoch += 1
        self.requests = []
        self.handler = self.default
        self.delay = 0.0
        self.disconnects = 0
        for name in set(vars(self)) - self._attributes:  # anything a test set on it, e.g. a scripted answer
            delattr(self, name)
        return self

    def start(self) -> Upstream:
        """Serve in a background thread."""
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        """Serving (not stopped by a test)."""
        return self.thread.is_alive() and not self.stopped

    def stop(self) -> None:
        """Shut down."""
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()

    @property
    def last(self) -> dict:
        """The most recent request."""
        return self.requests[-1]
