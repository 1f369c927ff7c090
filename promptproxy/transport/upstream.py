"""Pooled upstream connections per provider (urllib3, no requests on the hot path) and the one place that sends."""
from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time

from urllib3 import PoolManager, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError

from ..core.catalog import ProviderInfo
from ..core.deadline import set_idle_timeout  # also imported from here by proxy.send
from ..core.errors import ErrorCode, Fault, GatewayError, UpstreamError
from ..netguard import is_public
from ..providers.base import UpstreamRequest

log = logging.getLogger("promptproxy.upstream")

# What requests sent by default (the upstreams saw these before the switch to urllib3); a provider's own win.
DEFAULT_HEADERS = {"User-Agent": "promptproxy", "Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
# requests' header checks (an admin-set header with CR, LF or NUL must never reach the wire): refused with a 502.
VALID_NAME = re.compile(r"^[^:\s][^:\r\n\x00]*$")
VALID_VALUE = re.compile(r"^\S[^\r\n\x00]*$|^$")


class UpstreamResponse:
    """The parts of an upstream answer the pipeline uses: status, headers, the urllib3 response to read from."""

    __slots__ = ("raw", "status_code", "headers")

    def __init__(self, raw):
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive

    def close(self) -> None:
        """Close the body and give the connection back to its pool (a connection not read to the end is closed)."""
        self.raw.close()
        self.raw.release_conn()


class Upstreams:
    """One urllib3 pool manager per provider, sized for the server's thread pool; no redirects, no retries."""

    def __init__(self, pool_size: int, allow_private: bool = True):
        self.pool_size = pool_size
        self.allow_private = allow_private
        self._pools: dict[tuple, PoolManager] = {}
        self._lock = threading.Lock()

    def pool(self, provider: ProviderInfo) -> PoolManager:
        """The pool manager for a provider (a new one if its base URL changed)."""
        key = (provider.id, provider.base_url)
        found = self._pools.get(key)
        if found is None:
            with self._lock:
                found = self._pools.get(key)
                if found is None:
                    # block=False: a burst beyond pool_size opens extra connections instead of waiting for one.
                    found = PoolManager(num_pools=4, maxsize=self.pool_size, block=False, retries=False)
                    if not self.allow_private:
                        found.pool_classes_by_scheme = {"http": PublicHTTPConnectionPool,
                                                        "https": PublicHTTPSConnectionPool}
                    self._pools[key] = found
        return found

    def send(self, provider: ProviderInfo, req: UpstreamRequest, first_byte_timeout: float,
             connect_timeout: float | None = None) -> UpstreamResponse:
        """POST and return once headers arrive; network failures become 502/504 UpstreamErrors."""
        headers = dict(DEFAULT_HEADERS)
        if req.headers:
            for name, value in req.headers.items():
                if not VALID_NAME.match(name) or not VALID_VALUE.match(str(value)):
                    raise UpstreamError(502, "The upstream could not be reached.",
                                        code=ErrorCode.UPSTREAM_UNAVAILABLE, fault=Fault.CONNECT)
            headers.update(req.headers)
        timeout = Timeout(connect=connect_timeout or provider.connect_timeout, read=first_byte_timeout)
        try:
            raw = self.pool(provider).urlopen("POST", req.url, body=req.body, headers=headers, redirect=False,
                                              retries=False, preload_content=False, decode_content=False,
                                              timeout=timeout)
        except NewConnectionError:  # a subclass of ConnectTimeoutError in urllib3 2: refused, unresolvable
            raise UpstreamError(502, "The upstream could not be reached.", code=ErrorCode.UPSTREAM_UNAVAILABLE,
                                fault=Fault.CONNECT) from None
        except ConnectTimeoutError:
            raise UpstreamError(504, "The upstream did not accept the connection in time.",
                                code=ErrorCode.UPSTREAM_TIMEOUT, fault=Fault.CONNECT) from None
        except ReadTimeoutError:
            raise UpstreamError(504, "The upstream did not answer in time.", code=ErrorCode.UPSTREAM_TIMEOUT,
                                fault=Fault.FIRST_BYTE) from None
        except (HTTPError, OSError, ValueError):
            raise UpstreamError(502, "The upstream could not be reached.", code=ErrorCode.UPSTREAM_UNAVAILABLE,
                                fault=Fault.CONNECT) from None
        return UpstreamResponse(raw)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools.values():
            pool.clear()
        self._pools.clear()


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


def read_body(resp: UpstreamResponse, limit: int, deadline: float | None = None) -> bytes:
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


def iter_raw(resp: UpstreamResponse, chunk_size: int = 65536):
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
