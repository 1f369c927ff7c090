"""A closed-loop HTTP/1.1 load driver that records every sample (exact percentiles).

Each of N workers owns one keep-alive connection and sends its next request as soon as the
last answer is complete. Non-streaming mode records latency; streaming mode also records the
time to the first SSE ``data:`` bytes and the spread from first to last ``data:`` bytes.
Stdlib only: asyncio protocols, so one core drives thousands of requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

perf = time.perf_counter


@dataclass(frozen=True)
class Target:
    """Where and what to send; the raw request bytes are built once."""

    host: str
    port: int
    raw: bytes
    stream: bool
    end: bytes = b"[DONE]"  # a stream is complete once this was seen (Responses: b"response.completed")

    @classmethod
    def build(
        cls,
        url: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        end: bytes = b"[DONE]",
    ):
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError("only http:// URLs are supported")
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Accept: text/event-stream" if stream else "Accept: application/json",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        return cls(host, port, raw, stream, end)


@dataclass(slots=True)
class Sample:
    """One request: when it started and what it measured (seconds)."""

    start: float
    latency: float
    status: int
    ok: bool
    ttfc: float = math.nan
    spread: float = math.nan
    events: int = 0
    error: str = ""


@dataclass
class Result:
    """Every sample of one run plus the driver's own cost."""

    samples: list[Sample] = field(default_factory=list)
    window: float = 0.0
    completed: int = 0  # every answered request, warm-up included (for CPU per request)
    elapsed: float = 0.0  # wall time of the whole run, warm-up included
    driver_cpu: float = 0.0
    concurrency: int = 0
    stream: bool = False

    def summary(self) -> dict:
        """Exact percentiles over the successful samples, in milliseconds."""
        good = [s for s in self.samples if s.ok]
        errors: dict[str, int] = {}
        for s in self.samples:
            if not s.ok:
                key = s.error or f"http {s.status}"
                errors[key] = errors.get(key, 0) + 1
        out = {
            "concurrency": self.concurrency,
            "stream": self.stream,
            "requests": len(self.samples),
            "ok": len(good),
            "completed_incl_warmup": self.completed,
            "errors": errors,
            "window_s": round(self.window, 3),
            "elapsed_s": round(self.elapsed, 3),
            "rps": round(len(good) / self.window, 1) if self.window > 0 else 0.0,
            "driver_cpu_s": round(self.driver_cpu, 3),
            "driver_cpu_frac": round(self.driver_cpu / self.elapsed, 3) if self.elapsed > 0 else 0.0,
            "latency_ms": stats([s.latency for s in good]),
        }
        if errors:
            out["error_after_ms"] = stats([s.latency for s in self.samples if not s.ok])
        if self.stream:
            out["ttfc_ms"] = stats([s.ttfc for s in good])
            out["spread_ms"] = stats([s.spread for s in good])
            out["events_min"] = min((s.events for s in good), default=0)
        return out


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def stats(values: list[float]) -> dict:
    """p50/p90/p99/max/mean in milliseconds, rounded to microseconds."""
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return {"n": 0}

    def ms(v: float) -> float:
        return round(v * 1000.0, 3)

    return {
        "n": len(values),
        "min": ms(values[0]),
        "p50": ms(percentile(values, 50)),
        "p90": ms(percentile(values, 90)),
        "p99": ms(percentile(values, 99)),
        "max": ms(values[-1]),
        "mean": ms(sum(values) / len(values)),
    }


class ResponseError(Exception):
    """The connection broke or the response could not be parsed."""


class Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.future: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.buf = bytearray()
        self.state = "head"  # head -> length | chunk-size | chunk-data | trailer | eof -> head
        self.status = 0
        self.remaining = 0
        self.keep_alive = True
        self.stream = False
        self.end = b"[DONE]"
        self.t0 = 0.0
        self.first = math.nan
        self.last = math.nan
        self.events = 0
        self.done_seen = False
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == "eof" and self.future is not None:
            self._finish()
        elif self.future is not None and not self.future.done():
            self.future.set_exception(ResponseError(f"connection lost in {self.state}"))

    def send(self, raw: bytes, stream: bool, end: bytes = b"[DONE]") -> asyncio.Future:
        """Write one request; the future resolves to a Sample."""
        self._reset()
        self.stream = stream
        self.end = end
        self.future = asyncio.get_running_loop().create_future()
        self.t0 = perf()
        self.transport.write(raw)  # type: ignore[union-attr]
        return self.future

    def data_received(self, data: bytes) -> None:
        if self.future is None or self.future.done():
            return
        if self.state == "head":
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._head(bytes(self.buf[:end])):
                return
            data = bytes(self.buf[end + 4 :])
            self.buf = bytearray()
            if self.state == "done":
                self._finish()
                return
        if self.stream and data:
            self._scan(data)
        if self.state == "length":
            self.remaining -= len(data)
            if self.remaining <= 0:
                self._finish()
        elif self.state == "eof":
            return
        else:
            self.buf += data
            self._dechunk()

    def _head(self, head: bytes) -> bool:
        """Parse the status line and framing headers; False if the response is bad."""
        lines = head.decode("latin-1").split("\r\n")
        try:
            self.status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self.future.set_exception(ResponseError("bad status line"))  # type: ignore[union-attr]
            return False
        length = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                self.keep_alive = False
        if lines[0].startswith("HTTP/1.0"):
            self.keep_alive = False
        if chunked:
            self.state = "chunk-size"
        elif length is not None:
            self.state = "length" if length > 0 else "done"
            self.remaining = length
        else:
            self.state = "eof"
            self.keep_alive = False
        return True

    def _scan(self, data: bytes) -> None:
        """Time SSE data lines; chunk-size lines never contain 'data:'."""
        # A marker split across reads starts in the kept tail; 4 bytes cannot hold all of "data:".
        joined = self.tail + data
        n = (joined[-len(data) - 4 :] if len(joined) > len(data) + 4 else joined).count(b"data:")
        if n:
            now = perf()
            if math.isnan(self.first):
                self.first = now
            self.last = now
            self.events += n
        if not self.done_seen and self.end in joined:
            self.done_seen = True
        self.tail = joined[-max(6, len(self.end)) :]

    def _dechunk(self) -> None:
        """Walk chunk framing until the terminating zero-size chunk."""
        buf = self.buf
        pos = 0
        while True:
            if self.state == "chunk-size":
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.state = "trailer"
                else:
                    self.state = "chunk-data"
                    self.remaining = size + 2
            elif self.state == "chunk-data":
                take = min(self.remaining, len(buf) - pos)
                pos += take
                self.remaining -= take
                if self.remaining:
                    break
                self.state = "chunk-size"
            elif self.state == "trailer":
                if buf[pos : pos + 2] == b"\r\n":
                    del buf[: pos + 2]
                    self._finish()
                    return
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                del buf[: end + 4]
                self._finish()
                return
        del buf[:pos]

    def _finish(self) -> None:
        now = perf()
        ok = self.status == 200 and (not self.stream or self.done_seen)
        error = "" if ok or self.status != 200 else f"stream without {self.end.decode()}"
        sample = Sample(self.t0, now - self.t0, self.status, ok, error=error)
        if self.stream:
            sample.ttfc = self.first - self.t0
            sample.spread = self.last - self.first
            sample.events = self.events
        self.state = "idle"
        if not self.keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        fut, self.future = self.future, None
        if fut is not None and not fut.done():
            fut.set_result(sample)


async def run(
    target: Target,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    warmup: float = 0.0,
    timeout: float = 60.0,
) -> Result:
    """Drive target with `concurrency` workers for `duration` seconds or `count` requests."""
    if duration is None and count is None:
        raise ValueError("give a duration or a count")
    loop = asyncio.get_running_loop()
    t_start = perf()
    measure_from = t_start + warmup
    deadline = measure_from + duration if duration is not None else math.inf
    budget = [count if count is not None else math.inf]
    samples: list[Sample] = []
    completed = [0]
    cpu0 = time.process_time()

    async def worker() -> None:
        client: Client | None = None
        while perf() < deadline and budget[0] > 0:
            budget[0] -= 1
            if client is None or client.closed:
                try:
                    _, client = await asyncio.wait_for(
                        loop.create_connection(Client, target.host, target.port), timeout
                    )
                except (OSError, TimeoutError) as exc:
                    samples.append(Sample(perf(), 0.0, 0, False, error=f"connect: {type(exc).__name__}"))
                    client = None
                    await asyncio.sleep(0.05)
                    continue
            t0 = perf()
            future = client.send(target.raw, target.stream, target.end)
            timer = loop.call_later(timeout, lambda f=future: f.done() or f.set_exception(ResponseError("timeout")))
            try:
                sample = await future
            except ResponseError as exc:
                sample = Sample(t0, perf() - t0, 0, False, error=str(exc))
                if client.transport is not None:
                    client.transport.close()
                client = None
            finally:
                timer.cancel()
            completed[0] += 1
            if sample.start >= measure_from:
                samples.append(sample)
        if client is not None and client.transport is not None:
            client.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    t_end = max((s.start + s.latency for s in samples), default=perf())
    result = Result(
        samples, max(t_end - measure_from, 1e-9), completed[0], perf() - t_start, time.process_time() - cpu0
    )
    result.concurrency = concurrency
    result.stream = target.stream
    return result


def drive(target: Target, concurrency: int, **kwargs) -> Result:
    """Synchronous wrapper around run()."""
    return asyncio.run(run(target, concurrency, **kwargs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:9100/v1/chat/completions")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("-d", "--body", default=None, help="JSON body (default: a small chat request)")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-t", "--duration", type=float, default=None, help="seconds (default 5)")
    parser.add_argument("-n", "--count", type=int, default=None, help="total requests instead of a duration")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of samples to discard")
    parser.add_argument("--stream", action="store_true", help="send stream:true and time SSE chunks")
    parser.add_argument("--timeout", type=float, default=60.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    if args.body:
        body = json.loads(args.body)
    if args.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    target = Target.build(args.url, json.dumps(body).encode(), headers, stream=args.stream)
    duration = args.duration if args.duration is not None or args.count is not None else 5.0
    result = drive(
        target,
        args.concurrency,
        duration=duration,
        count=args.count,
        warmup=args.warmup,
        timeout=args.timeout,
    )
    print(json.dumps(result.summary(), indent=2))
    return 0 if result.summary()["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
