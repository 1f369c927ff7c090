"""A requests session for side traffic (webhooks, MCP servers) with the upstream address guard at connect time."""
from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from .upstream import PublicHTTPConnectionPool, PublicHTTPSConnectionPool


class PublicOnlyAdapter(HTTPAdapter):
    """A requests adapter whose connections refuse private peers (used unless ALLOW_PRIVATE_UPSTREAMS)."""

    def init_poolmanager(self, *args, **kwargs):
        """Swap the pool classes after the pool manager is built."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": PublicHTTPConnectionPool,
                                                   "https": PublicHTTPSConnectionPool}


def guarded_session(allow_private: bool) -> requests.Session:
    """No retries, no environment proxies or .netrc, and (unless allowed) no private peers."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(max_retries=0) if allow_private else PublicOnlyAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
