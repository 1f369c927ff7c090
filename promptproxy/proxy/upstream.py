"""Pooled HTTP sessions per provider and the one place that sends upstream requests."""
from __future__ import annotations

import ipaddress
import logging
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from requests.utils import check_header_validity
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from ..core.errors import ErrorCode, Fault, GatewayError, UpstreamError
from ..netguard import is_public
from ..providers.base import UpstreamRequest
from .catalog import ProviderInfo

log = logging.getLogger("promptproxy.upstream")


class Upstreams:
    """One requests.Session per provider, sized for the server's thread pool."""

    def __init__(self, pool_size: int, allow_private: bool = True):
        self.pool_size = pool_size
        self.allow_private = allow_private
        self._sessions: dict[tuple, requests.Session] = {}
        self._lock = threading.Lock()

    def session(self, provider: ProviderInfo) -> requests.Session:
        """The pooled session for a provider (a new one if its base URL changed)."""
        key = (provider.id, provider.base_url)
        found = self._sessions.get(key)
        if found is None:
            with self._lock:
                found = self._sessions.get(key)
                if found is None:
                    found = LeanSession()
                    found.trust_env = False  # never route through environment proxies or .netrc
                    adapter_cls = HTTPAdapter if self.allow_private else PublicOnlyAdapter
                    adapter = adapter_cls(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
                    found.mount("http://", adapter)
                    found.mount("https://", adapter)
                    self._sessions[key] = found
        return found

    def send(self, provider: ProviderInfo, req: UpstreamRequest, first_byte_timeout: float,
             connect_timeout: float | None = None) -> requests.Response:
        """POST and return once headers arrive; network failures become 502/504 UpstreamErrors."""
        try:
            return self.session(provider).post(
                req.url, data=req.body, headers=req.headers, stream=True, allow_redirects=False,
                timeout=(connect_timeout or provider.connect_timeout, first_byte_timeout),
            )
        except requests.exceptions.ConnectTimeout:
            raise UpstreamError(504, "The upstream did not accept the connection in time.",
                                code=ErrorCode.UPSTREAM_TIMEOUT, fault=Fault.CONNECT) from None
        except requests.exceptions.ReadTimeout:
            raise UpstreamError(504, "The upstream did not answer in time.", code=ErrorCode.UPSTREAM_TIMEOUT,
                                fault=Fault.FIRST_BYTE) from None
        except requests.exceptions.RequestException:
            raise UpstreamError(502, "The upstream could not be reached.", code=ErrorCode.UPSTREAM_UNAVAILABLE,
                                fault=Fault.CONNECT) from None

    def close(self) -> None:
        """Close every pooled connection."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()


class LeanSession(requests.Session):
    """A Session whose `post` skips requests' per-call merging of settings, cookies, proxies and redirects.

    Profiling showed Session.request spending more CPU than the HTTP exchange itself (settings merge, URL
    re-encoding, environment look-ups). The gateway sends pre-built bodies, never follows redirects, keeps no
    cookies between callers and ignores environment proxies, so it hands a PreparedRequest straight to the
    mounted adapter (the same adapter, pool, timeouts and exceptions as before).
    """

    def post(self, url, data=None, headers=None, stream=True, allow_redirects=False, timeout=None, **kwargs):
        """POST through the mounted adapter; falls back to requests' full path for anything unusual."""
        if kwargs or allow_redirects or not isinstance(data, bytes | None) or not url.isascii():
            return super().post(url, data=data, headers=headers, stream=stream, allow_redirects=allow_redirects,
                                timeout=timeout, **kwargs)
        prepared = requests.PreparedRequest()
        prepared.method = "POST"
        prepared.url = url
        merged = requests.structures.CaseInsensitiveDict(self.headers)
        if headers:
            for header in headers.items():
                check_header_validity(header)  # CR/LF in an admin-set header must fail as before (502)
            merged.update(headers)
        merged["Content-Length"] = str(len(data or b""))
        prepared.headers = merged
        prepared.body = data
        prepared.hooks = {"response": []}
        prepared._cookies = None
        return self.get_adapter(url).send(prepared, stream=stream, timeout=timeout, verify=self.verify,
                                          cert=self.cert, proxies={})


# -- DNS rebinding guard ---------------------------------------------------------------------------
def check_peer(sock, host: str) -> None:
    """Refuse a connection whose actual peer is not a public address (the name may have re-resolved)."""
    address = sock.getpeername()[0]
    ip = ipaddress.ip_address(address.split("%")[0])
    if not is_public(ip):
        sock.close()
        log.warning("refused upstream connection: %s resolved to the private or special address %s", host, ip)
        raise OSError(f"{host} resolved to a private or special address")


class _PublicOnly:
    """Mixin for urllib3 connections: check the connected peer before a byte (or TLS hello) is sent."""

    def _new_conn(self):
        sock = super()._new_conn()
        try:
            check_peer(sock, self.host)
        except OSError as exc:
            raise NewConnectionError(self, f"Refused connection: {exc}") from None
        return sock


class PublicHTTPConnection(_PublicOnly, HTTPConnection):
    """HTTP connection limited to public peers."""


class PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    """HTTPS connection limited to public peers."""


class PublicHTTPConnectionPool(HTTPConnectionPool):
    """Pool of PublicHTTPConnection."""

    ConnectionCls = PublicHTTPConnection


class PublicHTTPSConnectionPool(HTTPSConnectionPool):
    """Pool of PublicHTTPSConnection."""

    ConnectionCls = PublicHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    """A requests adapter whose connections refuse private peers (used unless ALLOW_PRIVATE_UPSTREAMS)."""

    def init_poolmanager(self, *args, **kwargs):
        """Swap the pool classes after the pool manager is built."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": PublicHTTPConnectionPool,
                                                   "https": PublicHTTPSConnectionPool}


def set_idle_timeout(resp: requests.Response, seconds: float) -> None:
    """After the headers, later reads wait at most the idle gap (not the first-byte timeout)."""
    conn = getattr(resp.raw, "_connection", None) or getattr(resp.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def read_body(resp: requests.Response, limit: int, deadline: float | None = None) -> bytes:
    """Read a whole response body, refusing one larger than the limit or slower than the deadline.

    Each read takes what one socket read gives and waits at most until the deadline (perf_counter time), so
    an upstream trickling a byte a second cannot hold the worker past the call's total timeout.
    """
    chunks, size = [], 0
    raw = resp.raw
    while True:
        if deadline is not None:
            left = deadline - time.perf_counter()
            if left <= 0:
                resp.close()
                raise GatewayError(504, "The upstream did not send its whole answer within the total time limit.",
                                   code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
            set_idle_timeout(resp, left)
        chunk = raw.read1(65536, decode_content=True) if hasattr(raw, "read1") else raw.read(65536)
        if not chunk:  # read1 decodes until it has bytes, so empty means the end
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            resp.close()
            raise GatewayError(502, "The upstream response was too large.", code=ErrorCode.BAD_UPSTREAM_RESPONSE,
                               type="server_error")
        chunks.append(chunk)


def iter_raw(resp: requests.Response, chunk_size: int = 65536):
    """Yield bytes as they arrive (read1 returns whatever one socket read gives)."""
    raw = resp.raw
    while True:
        data = raw.read1(chunk_size) if hasattr(raw, "read1") else raw.read(1)
        if not data:
            return
        yield data


def drain(resp, timeout: float = 0.5, max_reads: int = 8) -> None:
    """After the last event, read the stream's end (the chunked terminator) so its connection is reused."""
    try:
        set_idle_timeout(resp, timeout)
        for _ in range(max_reads):
            if not resp.raw.read1(65536):
                resp.raw.release_conn()
                return
    except Exception:  # noqa: S110  # nosec B110
        pass  # a connection we cannot reuse is simply closed
