"""The OpenAI Responses dialect: passed through to providers that speak it, translated to chat for the others.

The gateway keeps conversation state itself (`store`, `previous_response_id`): upstreams always get the whole
input and `store: false`, so a response id is the gateway's own and only its owner can read it.
"""
from __future__ import annotations

import time

import orjson

from ..core.errors import ErrorCode, GatewayError
from ..core.usage import prompt_tokens
from ..proxy import inject
from ..proxy.pipeline import Plan
from ..proxy.resolve import positive_int, stream_flag
from . import responses_store as store
from . import responses_wire as wire
from .envelopes import event_name, frame
from .openai import TEXT as CHAT_TEXT

# Hosted tools a client sends on every turn whether or not it needs them (Codex always lists web_search): for
# a chat upstream they are left out while the model may choose freely; forced with tool_choice they are a 400.
OPTIONAL_HOSTED_TOOLS = frozenset({"web_search", "web_search_preview"})


class ResponsesDialect:
    """POST /v1/responses for any chat model."""

    name = "responses"
    kind = "chat"

    def __init__(self):
        self.request: dict = {}
        self.items: list = []
        self.history: list = []
        self.created_at = int(time.time())

    def validate(self, body: dict) -> None:
        """`input` a string or items, `stream` a boolean, `max_output_tokens` positive."""
        if not isinstance(body.get("input"), str | list):
            raise GatewayError(400, "You must provide an `input` (a string or an array of items).", param="input")
        stream_flag(body)
        positive_int(body, "max_output_tokens")
        previous = body.get("previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise GatewayError(400, "`previous_response_id` must be a string.", param="previous_response_id")

    def plan(self, gw, call, body: dict) -> Plan:
        """Native with the stored prompt in `instructions`, or translated to chat with it as the first message."""
        variables = body.pop("prompt_variables", None)
        self.request = _echoed(body)
        self.history = self._history(call, body.get("previous_response_id"))
        self.items = _translated(wire.input_items, body)
        provider = call.model.provider
        if provider.responses_api:
            native = {key: value for key, value in body.items() if key != "previous_response_id"}
            native.update(input=[*self.history, *self.items], store=False)
            native = inject.into_responses(call, native, variables)
            view = {"messages": [{"role": "system", "content": native.get("instructions") or ""},
                                 {"role": "user", "content": orjson.dumps(native["input"]).decode()}],
                    "max_tokens": native.get("max_output_tokens")}
            return Plan("responses", native, view, native=True)
        chat = _translated(wire.request_to_chat, body, self.history, reasoning_effort=provider.reasoning_effort,
                           drop_tools=_droppable(body))
        chat = inject.into_openai(call, chat, "chat", variables)
        if not provider.stream_usage:
            chat.pop("stream_options", None)  # this server refuses it; usage is then estimated
        return Plan("chat", chat, chat)

    def _history(self, call, previous: str | None) -> list:
        """The items a previous response continues from: another user's, or one on a model this key may not use, is
        a 404."""
        if not previous:
            return []
        found = store.history(previous, call.principal)
        if found is None:
            raise GatewayError(404, f"Previous response with id '{previous}' not found.",
                               param="previous_response_id", code=ErrorCode.RESPONSE_NOT_FOUND)
        return found

    def response_id(self, call) -> str:
        """The gateway's own id for this response, tied to the request id."""
        return "resp_" + call.request_id.removeprefix("req_")

    def render(self, call, plan: Plan, out: dict) -> dict:
        """A Response object (the upstream's own, renamed, when native), stored unless `store` is false."""
        if plan.native:
            if out.get("status") == "failed":  # relayed as it is, but the row records the failure
                call.fail(failure(out))
            response = {**out, "id": self.response_id(call), "model": call.public_model,
                        "store": self.request.get("store", True),
                        "previous_response_id": self.request.get("previous_response_id")}
        else:
            response = wire.chat_to_response(out, response_id=self.response_id(call), model=call.public_model,
                                             request=self.request, created_at=self.created_at)
        self.keep(call, response)
        return response

    def keep(self, call, response: dict) -> None:
        """Store a finished response for previous_response_id and GET /v1/responses/{id} (unless store: false).

        Saved when the answer is complete (responses_store.install), before the client gets the end of it.
        """
        if self.request.get("store", True) is False or call.principal is None:
            return
        store.keep(call, response=response, user_id=call.principal.user_id, key_id=call.principal.key_id,
                   model=call.public_model, input_items=self.items, context=self.history,
                   previous_response_id=self.request.get("previous_response_id"))

    def encoder(self, call, plan: Plan):
        """Responses events: the upstream's own (ids renamed) or translated from chat chunks."""
        if plan.native:
            return NativeResponsesEncoder(self, call)
        return ResponsesEncoder(self, call)

    def text(self, plan: Plan):
        """Native Responses, or the chat answers they were translated from."""
        return TEXT if plan.native else CHAT_TEXT

    def cacheable(self, streamed: bool) -> bool:
        """Never: a response has the gateway's own id and may be stored; a replay would reuse both."""
        return False

    def replay(self, call, plan: Plan, answer: dict):
        """Not cacheable, so never replayed."""
        raise NotImplementedError("Responses are not cached")

    def assembler(self, plan: Plan, limit: int):
        """Not cacheable, so never assembled."""
        return None


class ResponsesInputTokens(ResponsesDialect):
    """POST /v1/responses/input_tokens: the input as the upstream would see it, counted with tiktoken."""

    def validate(self, body: dict) -> None:
        """As for a response, with `input` optional."""
        body.setdefault("input", [])
        super().validate(body)

    def plan(self, gw, call, body: dict) -> Plan:
        """Counted locally, after the stored prompt is in; limits see a one-token answer."""
        body.pop("stream", None)
        plan = super().plan(gw, call, body)
        counted = plan.view if plan.native else plan.body
        total = prompt_tokens(counted)
        view = {**plan.view, "max_tokens": 1, "max_completion_tokens": None}
        return Plan(plan.endpoint, plan.body, view, local={"object": "response.input_tokens", "input_tokens": total})

    def render(self, call, plan: Plan, out: dict) -> dict:
        """The count as it is."""
        return out


def _echoed(body: dict) -> dict:
    """A private copy of the request's parameters the Response echoes; `input` is not echoed, so not copied.

    Injection and translation may change the body's lists in place; the copy keeps what the client sent. An
    orjson round trip copies a parsed JSON body exactly, at a fraction of deepcopy's cost.
    """
    return orjson.loads(orjson.dumps({key: value for key, value in body.items() if key != "input"}))


def _droppable(body: dict) -> frozenset[str]:
    """Optional hosted tools to leave out for chat upstreams, unless tool_choice forces one of them."""
    choice = body.get("tool_choice")
    forced = choice.get("type") if isinstance(choice, dict) else None
    return OPTIONAL_HOSTED_TOOLS - {forced}


def _translated(fn, *args, **kwargs):
    """Run a translation; what the other format cannot express is a 400 naming the field."""
    try:
        return fn(*args, **kwargs)
    except wire.TranslationError as exc:
        raise GatewayError(400, exc.message, param=exc.param, code=ErrorCode.UNSUPPORTED_PARAMETER) from None


class ResponsesEncoder:
    """Chat chunks from any upstream -> the Responses event sequence, stored at the end."""

    def __init__(self, dialect: ResponsesDialect, call):
        self.dialect, self.call = dialect, call
        self.translator = wire.ChatStreamToResponses(dialect.response_id(call), call.public_model, dialect.request,
                                                     dialect.created_at)

    def chunk(self, chunk: dict) -> bytes:
        """Events for one chat chunk (response.created and in_progress come with the first)."""
        return frame(self.translator.feed(chunk))

    def done(self, call) -> bytes:
        """Close every item, then response.completed (or failed after an error) with the settled usage."""
        if self.translator.response.get("status") == "failed":
            return b""
        events = self.translator.finish(call.usage)
        self.dialect.keep(call, self.translator.response)
        return frame(events)

    def error(self, err: GatewayError) -> bytes:
        """response.failed with the error."""
        return frame(self.translator.fail(err.message, str(err.code or err.type)))


class NativeResponsesEncoder:
    """The upstream's Responses events relayed, with the gateway's response id and public model name."""

    def __init__(self, dialect: ResponsesDialect, call):
        self.dialect, self.call = dialect, call
        self.final: dict | None = None
        self.latest: dict | None = None  # the newest response snapshot, for response.failed after an error
        self.sequence = -1

    def chunk(self, event: dict) -> bytes:
        """One event; response snapshots get our id, model and store flag."""
        if isinstance(event.get("sequence_number"), int):
            self.sequence = event["sequence_number"]
        response = event.get("response")
        if isinstance(response, dict):
            response.update(id=self.dialect.response_id(self.call), model=self.call.public_model,
                            store=self.dialect.request.get("store", True),
                            previous_response_id=self.dialect.request.get("previous_response_id"))
            self.latest = response
            if event.get("type") == "response.completed":
                self.final = response
        if event.get("type") == "response.failed":  # relayed as it is, but the row records the failure
            self.call.fail(failure(response))
        return frame([(event_name(event.get("type") or "message"), event)])

    def done(self, call) -> bytes:
        """response.completed was the last event relayed; keep it."""
        if self.final is not None:
            self.dialect.keep(call, self.final)
        return b""

    def error(self, err: GatewayError) -> bytes:
        """response.failed, as the translated path ends a failed stream (Codex and the SDKs read it)."""
        response = {**(self.latest or {"id": self.dialect.response_id(self.call), "object": "response",
                                       "model": self.call.public_model, "output": []}),
                    "status": "failed", "error": {"code": str(err.code or err.type), "message": err.message}}
        self.sequence += 1
        return frame([("response.failed", {"type": "response.failed", "sequence_number": self.sequence,
                                            "response": response})])


def failure(response) -> GatewayError:
    """The error a failed native Response reported, for its row (send.scrub_reports already made it safe).

    The translated path records an upstream's error mid-answer as a 502; a native failure is recorded the same.
    """
    report = response.get("error") if isinstance(response, dict) else None
    message, code = (report.get("message"), report.get("code")) if isinstance(report, dict) else (report, None)
    return GatewayError(502, message if isinstance(message, str) and message else "The upstream reported that the "
                        "response failed.", code=code if isinstance(code, str) and code else ErrorCode.UPSTREAM_ERROR,
                        type="server_error")


class ResponsesText:
    """Text and function arguments of native Responses objects and events."""

    @staticmethod
    def whole(out: dict, into: list[str]) -> None:
        """A Response's output items."""
        for item in out.get("output") if isinstance(out.get("output"), list) else ():
            if isinstance(item, dict):
                if isinstance(item.get("arguments"), str):
                    into.append(item["arguments"])
                for part in item.get("content") if isinstance(item.get("content"), list) else ():
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        into.append(part["text"])

    @staticmethod
    def chunk(event: dict, into: list[str]) -> None:
        """Text and function-argument delta events."""
        if event.get("type") in ("response.output_text.delta", "response.function_call_arguments.delta") and \
                isinstance(event.get("delta"), str):
            into.append(event["delta"])


TEXT = ResponsesText()
