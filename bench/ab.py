"""Chat vs Responses through the gateway, interleaved: short legs in turn over several rounds, pooled per variant.

Other work on a shared machine moves absolute figures from one minute to the next. Each round runs every leg
(c=1, c=32, streams at c=1 and c=64) for every variant in turn, the order rotating each round, so all variants
see the same conditions and their ratio holds even when the absolute figures are noisy. The c=1 legs also run
straight at the mock in the same rounds, so "added" latency compares with a baseline taken alongside.
"""

from __future__ import annotations

import time

import load
import procs

VARIANTS = ("chat", "responses", "responses_store")
LABELS = {
    "direct": "direct (mock)",
    "chat": "chat",
    "responses": "responses, store: false",
    "responses_store": "responses, store: true",
}
# (leg, stream, concurrency, also measured straight at the mock)
LEGS = (
    ("c1", False, 1, True),
    ("c32", False, 32, False),
    ("stream_c1", True, 1, True),
    ("stream_c64", True, 64, False),
)
WARMUP_S = 0.2  # opens the connections; its requests count for CPU, not for latency
SETTLE_S = 0.3  # longer than the log writer's 0.1 s flush interval
TOLERANCE = 0.10  # the bound: Responses within 10 % of chat


def merge(runs: list[load.Result]) -> load.Result:
    """One Result with every sample, window, request and driver second of several runs."""
    out = load.Result(concurrency=runs[0].concurrency, stream=runs[0].stream)
    for run in runs:
        out.samples += run.samples
        out.window += run.window
        out.completed += run.completed
        out.elapsed += run.elapsed
        out.driver_cpu += run.driver_cpu
    return out


def rotated(i: int) -> tuple[str, ...]:
    """The variants in round i's order."""
    k = i % len(VARIANTS)
    return VARIANTS[k:] + VARIANTS[:k]


def run(bench, rounds: int, seconds: float) -> dict:
    """All rounds; per leg and variant the pooled summary, with gateway CPU per request for gateway variants."""
    pid = bench.gateway.pid
    runs: dict[str, dict[str, list[load.Result]]] = {leg: {} for leg, *_ in LEGS}
    cpu: dict[str, dict[str, float]] = {leg: {} for leg, *_ in LEGS}
    print(f"Chat vs Responses, interleaved ({rounds} rounds of {seconds:g} s per leg and variant):", flush=True)
    for i in range(rounds):
        for leg, stream, concurrency, direct in LEGS:
            for variant in ("direct", *rotated(i)) if direct else rotated(i):
                target = bench.direct(stream) if variant == "direct" else bench.through(stream, api=variant)
                cpu0 = procs.cpu_seconds(pid)
                result = load.drive(target, concurrency, duration=seconds, warmup=WARMUP_S)
                time.sleep(SETTLE_S)  # the log writer's rows for this leg land in this leg's CPU, not the next one's
                spent = procs.cpu_seconds(pid) - cpu0
                runs[leg].setdefault(variant, []).append(result)
                if variant == "direct":
                    bench.direct_after_gateway += result.completed
                else:
                    cpu[leg][variant] = cpu[leg].get(variant, 0.0) + spent
                    bench.count_gateway(variant, result.completed)
            bench.gateway_alive(f"A/B round {i + 1} {leg}")
    out: dict = {"rounds": rounds, "seconds": seconds, "legs": {}}
    for leg, by_variant in runs.items():
        out["legs"][leg] = {}
        for variant, results in by_variant.items():
            summary = merge(results).summary()
            if variant in cpu[leg]:
                summary["gateway_cpu_s"] = round(cpu[leg][variant], 3)
                done = max(summary["completed_incl_warmup"], 1)
                summary["cpu_ms_per_request"] = round(cpu[leg][variant] * 1000 / done, 3)
            out["legs"][leg][variant] = summary
            _print(leg, variant, summary)
    return out


def _print(leg: str, variant: str, s: dict) -> None:
    """One progress line per pooled leg and variant."""
    key = "ttfc_ms" if s["stream"] else "latency_ms"
    line = f"  {leg:<10} {LABELS[variant]:<24} c={s['concurrency']:<3} ok={s['ok']:<6} rps={s['rps']:<8}"
    line += f" {'ttfc' if s['stream'] else 'latency'} p50={s[key].get('p50')} ms"
    if "cpu_ms_per_request" in s:
        line += f" cpu={s['cpu_ms_per_request']} ms/req"
    if s["errors"]:
        line += f" errors={s['errors']}"
    print(line, flush=True)


# -- the table ----------------------------------------------------------------------------------


def _get(ab: dict, leg: str, variant: str, *path: str):
    node = ab.get("legs", {}).get(leg, {}).get(variant)
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _added(ab: dict, leg: str, variant: str, metric: str):
    """A gateway variant's p50 minus the mock's p50 measured in the same rounds."""
    gateway, direct = _get(ab, leg, variant, metric, "p50"), _get(ab, leg, "direct", metric, "p50")
    return None if gateway is None or direct is None else gateway - direct


def metrics(ab: dict) -> list[tuple[str, dict, bool, str]]:
    """(metric, value per variant, whether lower is better, unit) for every compared figure."""

    def per(fn) -> dict:
        return {v: fn(v) for v in VARIANTS}

    return [
        ("added latency p50, c=1", per(lambda v: _added(ab, "c1", v, "latency_ms")), True, "ms"),
        ("gateway CPU per request, c=32", per(lambda v: _get(ab, "c32", v, "cpu_ms_per_request")), True, "ms"),
        ("throughput, c=32", per(lambda v: _get(ab, "c32", v, "rps")), False, "req/s"),
        ("latency p50, c=32", per(lambda v: _get(ab, "c32", v, "latency_ms", "p50")), True, "ms"),
        ("added TTFC p50, stream c=1", per(lambda v: _added(ab, "stream_c1", v, "ttfc_ms")), True, "ms"),
        ("TTFC p50, streams c=64", per(lambda v: _get(ab, "stream_c64", v, "ttfc_ms", "p50")), True, "ms"),
        ("gateway CPU per stream, c=64", per(lambda v: _get(ab, "stream_c64", v, "cpu_ms_per_request")), True, "ms"),
    ]


GATED = ("added latency p50, c=1", "gateway CPU per request, c=32")


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    return f"{value:.2f} ms"


def _delta(base, value) -> float | None:
    return None if base is None or value is None or base == 0 else (value - base) / base


def rows(ab: dict) -> list[tuple[str, ...]]:
    """(metric, chat, responses, Δ, responses+store, Δ, target, result)."""
    out = []
    for name, values, lower, unit in metrics(ab):
        chat = values["chat"]
        cells = [name, _fmt(chat, unit)]
        for variant in ("responses", "responses_store"):
            d = _delta(chat, values[variant])
            cells += [_fmt(values[variant], unit), "n/a" if d is None else f"{d:+.1%}"]
        d = _delta(chat, values["responses"])
        if name in GATED:
            worse = None if d is None else (d if lower else -d)
            cells += [f"store: false within {TOLERANCE:.0%} of chat",
                      "—" if worse is None else ("PASS" if worse <= TOLERANCE else "FAIL")]
        else:
            cells += ["", ""]
        out.append(tuple(cells))
    return out


def table(results: dict) -> str:
    """The A/B table in markdown, with its conditions above it."""
    ab = results.get("ab")
    if not ab:
        return ""
    head = ("Metric", "Chat", "Responses, store: false", "Δ vs chat", "Responses, store: true", "Δ vs chat",
            "Target", "Result")
    lines = [
        f"Chat vs Responses through the gateway, interleaved in the same run: {ab['rounds']} rounds, each leg "
        f"{ab['seconds']:g} s per variant in rotating order, samples pooled; 'added' is against the mock measured "
        "in the same rounds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(ab)]
    return "\n".join(lines)
