"""A capture server that answers like a plausible upstream and records every request an agent client sends.

Responses API (SSE or JSON) for Codex and the OpenAI SDKs, Messages API (SSE or JSON) for Claude Code, OpenAI chat
completions for anything else. Run it alone to watch a client: `python -m tests.e2e.capture --port 8765 --out DIR`
writes each request to DIR/NNN-METHOD-path.json.
"""
from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "proxy-authorization", "chatgpt-account-id"}
REPLY = "Hello from the capture server."
USAGE_IN, USAGE_OUT = 21, 6


def redact(headers: dict) -> dict:
    """Headers with secrets replaced by their length (the scheme kept), so fixtures can be committed."""
    out = {}
    for name, value in headers.items():
        if name.lower() in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] + " " if " " in value else ""
            out[name] = f"{scheme}<redacted {len(value)} chars>"
        else:
            out[name] = value
    return out


def sse(events: list[tuple[str | None, dict]]) -> bytes:
    """Server-sent-event frames; an event name of None writes a data-only frame."""
    frames = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        frames.append(f"{head}data: {json.dumps(data)}\n\n")
    return "".join(frames).encode()


def response_object(model: str, status: str, text: str | None) -> dict:
    """A Responses API `response` object, with the one message item once it is done."""
    output = []
    if text is not None:
        output = [{"id": "msg_cap_1", "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
    usage = None
    if status == "completed":
        usage = {"input_tokens": USAGE_IN, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": USAGE_OUT, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": USAGE_IN + USAGE_OUT}
    return {"id": "resp_cap_1", "object": "response", "created_at": 1700000000, "status": status,
            "model": model, "output": output, "usage": usage, "error": None, "incomplete_details": None,
            "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0,
            "tool_choice": "auto", "tools": [], "top_p": 1.0}


def responses_events(model: str, text: str = REPLY) -> list[tuple[str, dict]]:
    """The event sequence api.openai.com streams for a one-message answer."""
    item = {"id": "msg_cap_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    done_part = dict(part, text=text)
    done_item = dict(item, status="completed", content=[done_part])
    halves = [text[: len(text) // 2], text[len(text) // 2:]]
    events = [("response.created", {"response": response_object(model, "in_progress", None)}),
              ("response.in_progress", {"response": response_object(model, "in_progress", None)}),
              ("response.output_item.added", {"output_index": 0, "item": item}),
              ("response.content_part.added", {"item_id": "msg_cap_1", "output_index": 0, "content_index": 0,
                                               "part": part})]
    events += [("response.output_text.delta", {"item_id": "msg_cap_1", "output_index": 0, "content_index": 0,
                                               "delta": h, "logprobs": []}) for h in halves]
    events += [("response.output_text.done", {"item_id": "msg_cap_1", "output_index": 0, "content_index": 0,
                                              "text": text, "logprobs": []}),
               ("response.content_part.done", {"item_id": "msg_cap_1", "output_index": 0, "content_index": 0,
                                               "part": done_part}),
               ("response.output_item.done", {"output_index": 0, "item": done_item}),
               ("response.completed", {"response": response_object(model, "completed", text)})]
    return [(name, dict(data, type=name, sequence_number=i)) for i, (name, data) in enumerate(events)]


def responses_tool_events(model: str, name: str, arguments: dict) -> list[tuple[str, dict]]:
    """The event sequence for an answer that is one function call."""
    args = json.dumps(arguments)
    item = {"id": "fc_cap_1", "type": "function_call", "status": "in_progress", "call_id": "call_cap_1",
            "name": name, "arguments": ""}
    done_item = dict(item, status="completed", arguments=args)
    completed = dict(response_object(model, "completed", None), output=[done_item])
    events = [("response.created", {"response": response_object(model, "in_progress", None)}),
              ("response.output_item.added", {"output_index": 0, "item": item}),
              ("response.function_call_arguments.delta", {"item_id": "fc_cap_1", "output_index": 0,
                                                          "delta": args}),
              ("response.function_call_arguments.done", {"item_id": "fc_cap_1", "output_index": 0,
                                                         "arguments": args}),
              ("response.output_item.done", {"output_index": 0, "item": done_item}),
              ("response.completed", {"response": completed})]
    return [(n, dict(data, type=n, sequence_number=i)) for i, (n, data) in enumerate(events)]


def anthropic_tool_events(model: str, name: str, arguments: dict) -> list[tuple[str, dict]]:
    """The event sequence for an answer that is one tool_use block."""
    start = dict(anthropic_message(model), content=[], stop_reason=None,
                 usage={"input_tokens": USAGE_IN, "output_tokens": 1})
    block = {"type": "tool_use", "id": "toolu_cap_1", "name": name, "input": {}}
    return [("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "input_json_delta", "partial_json": json.dumps(arguments)}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                               "usage": {"output_tokens": USAGE_OUT}}),
            ("message_stop", {"type": "message_stop"})]


def has_tool_result(body: dict) -> bool:
    """Whether the conversation already carries a tool's result (Responses input or Messages content)."""
    items = body.get("input") if isinstance(body.get("input"), list) else []
    if any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items):
        return True
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            return True
    return False


def anthropic_message(model: str, text: str = REPLY) -> dict:
    """A Messages API answer."""
    return {"id": "msg_cap_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}}


def anthropic_events(model: str, text: str = REPLY) -> list[tuple[str, dict]]:
    """The event sequence api.anthropic.com streams for a one-block answer."""
    start = dict(anthropic_message(model, text), content=[], stop_reason=None,
                 usage={"input_tokens": USAGE_IN, "output_tokens": 1})
    return [("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": USAGE_OUT}}),
            ("message_stop", {"type": "message_stop"})]


def chat_completion(model: str, text: str = REPLY) -> dict:
    """An OpenAI chat.completion answer."""
    return {"id": "chatcmpl-cap", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                      "total_tokens": USAGE_IN + USAGE_OUT}}


def chat_tool_completion(model: str, name: str, arguments: dict) -> dict:
    """An OpenAI chat.completion answer that is one tool call."""
    call = {"id": "call_cap_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    body = chat_completion(model)
    body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "finish_reason": "tool_calls"}]
    return body


def chat_events(model: str, text: str | None = REPLY, call: tuple[str, dict] | None = None) -> list[tuple[None, dict]]:
    """chat.completion.chunk frames for a text or one tool call, then a usage chunk (sent whether asked or not)."""
    def chunk(delta: dict, finish: str | None = None) -> tuple[None, dict]:
        return None, {"id": "chatcmpl-cap", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    frames = [chunk({"role": "assistant", "content": ""})]
    if call:
        name, arguments = call
        frames.append(chunk({"tool_calls": [{"index": 0, "id": "call_cap_1", "type": "function",
                                             "function": {"name": name, "arguments": json.dumps(arguments)}}]}))
        frames.append(chunk({}, "tool_calls"))
    else:
        frames += [chunk({"content": text[: len(text) // 2]}), chunk({"content": text[len(text) // 2:]})]
        frames.append(chunk({}, "stop"))
    frames.append((None, {"id": "chatcmpl-cap", "object": "chat.completion.chunk", "created": 1700000000,
                          "model": model, "choices": [],
                          "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                                    "total_tokens": USAGE_IN + USAGE_OUT}}))
    return frames


def anthropic_tool_message(model: str, name: str, arguments: dict) -> dict:
    """A Messages API answer that is one tool_use block."""
    return dict(anthropic_message(model), stop_reason="tool_use",
                content=[{"type": "tool_use", "id": "toolu_cap_1", "name": name, "input": arguments}])


def responses_tool_object(model: str, name: str, arguments: dict) -> dict:
    """A whole Responses API answer that is one function call."""
    return dict(response_object(model, "completed", None), output=[
        {"id": "fc_cap_1", "type": "function_call", "status": "completed", "call_id": "call_cap_1", "name": name,
         "arguments": json.dumps(arguments)}])


def json_answer(data: dict) -> tuple[int, str, bytes]:
    """A 200 JSON answer."""
    return 200, "application/json", json.dumps(data).encode()


def sse_answer(events: list) -> tuple[int, str, bytes]:
    """A 200 event-stream answer; chat completions streams end in [DONE]."""
    payload = sse(events)
    if events and events[0][0] is None:
        payload += b"data: [DONE]\n\n"
    return 200, "text/event-stream", payload


def reply(route: str, body: dict, text: str = REPLY, call: tuple[str, dict] | None = None):
    """The answer to a model call in the dialect of its path (chat, Responses or Messages), or None for others.

    `call` (tool name, arguments) answers with one tool call instead of text.
    """
    model = body.get("model", "capture-model")
    stream = bool(body.get("stream"))
    if route.endswith("/messages"):
        if stream:
            return sse_answer(anthropic_tool_events(model, *call) if call else anthropic_events(model, text))
        return json_answer(anthropic_tool_message(model, *call) if call else anthropic_message(model, text))
    if route.endswith("/responses"):
        if stream:
            return sse_answer(responses_tool_events(model, *call) if call else responses_events(model, text))
        return json_answer(responses_tool_object(model, *call) if call else
                           response_object(model, "completed", text))
    if route.endswith("/chat/completions"):
        if stream:
            return sse_answer(chat_events(model, text, call))
        return json_answer(chat_tool_completion(model, *call) if call else chat_completion(model, text))
    return None


TOOL_CALLS = {"/responses": ("exec_command", {"cmd": "echo captured-tool-ran"}),
              "/messages": ("Bash", {"command": "echo captured-tool-ran", "description": "Print a marker"})}


def answer(method: str, path: str, body, tool_first: bool | tuple[str, dict] = False) -> tuple[int, str, bytes]:
    """(status, content type, payload) for a request, by path.

    With tool_first, a tool call answers a request that offers tools and carries no tool result yet: the given
    (name, arguments), or the client's shell tool when tool_first is True.
    """
    body = body if isinstance(body, dict) else {}
    route = path.split("?", 1)[0].rstrip("/")
    if method == "HEAD" or (method == "GET" and route in ("", "/", "/v1")):
        return 200, "text/plain", b""
    if route.endswith("/models") and method == "GET":
        return json_answer({"object": "list", "data": [
            {"id": "capture-model", "object": "model", "created": 1700000000, "owned_by": "capture"}]})
    if route.endswith("/messages/count_tokens"):
        return json_answer({"input_tokens": USAGE_IN})
    call = None
    if tool_first and body.get("tools") and not has_tool_result(body):
        call = tool_first if isinstance(tool_first, tuple) else \
            TOOL_CALLS["/messages" if route.endswith("/messages") else "/responses"]
    return reply(route, body, call=call) or (404, "application/json", json.dumps(
        {"error": {"message": f"no route {route}", "type": "not_found"}}).encode())


class CaptureServer:
    """Records requests in `self.requests` (and to `out` when given); answers by `answer`."""

    def __init__(self, out: Path | None = None, port: int = 0, tool_first: bool | tuple[str, dict] = False):
        self.requests: list[dict] = []
        self.tool_first = tool_first
        self.out = out
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # the body is not held back until the headers are acknowledged

            def log_message(self, *args):
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if not size:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _serve(self):
                raw = self._read_body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = {"undecoded_bytes": len(raw), "head": raw[:200].decode("latin-1")}
                outer.record({"method": self.command, "path": self.path, "headers": redact(dict(self.headers)),
                              "body": body})
                status, ctype, payload = answer(self.command, self.path, body, outer.tool_first)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()

    def record(self, req: dict) -> None:
        """Keep the request, numbered in arrival order, and write it out when asked to."""
        with self._lock:
            req = {"seq": len(self.requests) + 1, **req}
            self.requests.append(req)
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            slug = req["path"].split("?", 1)[0].strip("/").replace("/", "_") or "root"
            name = f"{req['seq']:03d}-{req['method']}-{slug}.json"
            (self.out / name).write_text(json.dumps(req, indent=2) + "\n")

    def start(self) -> CaptureServer:
        """Serve in a background thread."""
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut down."""
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """Serve until interrupted, writing every request under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tool-first", action="store_true", help="answer a first turn with a shell tool call")
    args = parser.parse_args()
    server = CaptureServer(args.out, args.port, args.tool_first)
    print(f"capturing on {server.url}, writing to {args.out}", flush=True)
    try:
        server.server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
