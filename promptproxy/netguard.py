"""Provider base-URL validation: http(s) only, no credentials, no private or special hosts unless allowed."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeURL(ValueError):
    """A base URL the gateway refuses to send secrets to."""


def _parse_host_ip(host: str) -> ipaddress._BaseAddress | None:
    """Parse the many spellings of an IP (dotted, decimal, hex, octal, short) like a resolver would."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host)  # accepts 127.1, 0x7f000001, 0177.0.0.1, 2130706433
    except OSError:
        return None
    return ipaddress.ip_address(packed)


def is_public(ip: ipaddress._BaseAddress) -> bool:
    """True only for globally routable unicast addresses (mapped/embedded IPv4 checked too)."""
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, (ip.teredo or (None, None))[1]):
            if embedded is not None and not is_public(embedded):
                return False
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.is_site_local:
            return False  # fec0::/10: deprecated site-local, still routed inside some networks; Python calls it global
    return ip.is_global and not ip.is_multicast and not ip.is_reserved and not ip.is_unspecified


def validate_base_url(url: str, allow_private: bool = False, resolve: bool = True) -> str:
    """Return the normalised URL or raise UnsafeURL with a reason a person can act on."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("base URL must start with http:// or https://")
    if parts.username or parts.password or "@" in parts.netloc:
        raise UnsafeURL("base URL must not contain credentials; use the API key field")
    if parts.query or parts.fragment:
        raise UnsafeURL("base URL must not contain a query or fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURL("base URL has no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UnsafeURL("base URL has an invalid port") from None
    if not allow_private:
        _check_host(host, resolve)
    return url.rstrip("/")


def _check_host(host: str, resolve: bool) -> None:
    hint = " (set PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS=1 to allow local and private upstreams)"
    if host.lower() in ("localhost",) or host.lower().endswith((".localhost", ".local", ".internal")):
        raise UnsafeURL(f"base URL points at a local host{hint}")
    ip = _parse_host_ip(host)
    if ip is not None:
        if not is_public(ip):
            raise UnsafeURL(f"base URL points at a private or special address{hint}")
        return
    if not resolve:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return  # unresolvable now; checked again at connect time by the same rule
    for info in infos:
        if not is_public(ipaddress.ip_address(info[4][0].split("%")[0])):
            raise UnsafeURL(f"base URL resolves to a private or special address{hint}")


def urlhost(url: str) -> tuple:
    """Scheme, host and port of a URL: what decides who receives the secrets sent to it."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


HOST_CHANGED = "cleared (host changed; enter it again)"


def drop_secrets_on_host_change(row, old_url: str, new_url: str, secrets: dict[str, tuple[str, ...]],
                                given: dict) -> dict[str, str]:
    """A change of host drops every stored secret unless a new one is given in the same update.

    `secrets` maps each secret's name to the row attributes holding it (the first says whether one is stored);
    `given` maps names to what the update sets (None = not given). Returns {name: HOST_CHANGED} for each dropped.
    """
    if urlhost(new_url) == urlhost(old_url):
        return {}  # same scheme, host and port: a new path reaches the same party
    dropped = {}
    for name, attrs in secrets.items():
        if given.get(name) is None and getattr(row, attrs[0]):
            for attr in attrs:
                setattr(row, attr, None)
            dropped[name] = HOST_CHANGED
    return dropped
