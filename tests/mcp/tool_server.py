"""A real MCP server (the official SDK's MCPServer, streamable HTTP under uvicorn) that records what it receives."""
from __future__ import annotations

import threading

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ..conftest import free_port, wait_for

SECRET = "mcp-upstream-secret-9f8e7d6c"


class ToolServer:
    """Tools `add`, `echo`, `fail`, `leak`; prompt `review`; every request's headers kept in `headers`."""

    def __init__(self, extra=None):
        """`extra(mcp)`, when given, registers more tools and prompts (the default set stays as listed above)."""
        self.headers: list[dict] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        mcp = MCPServer("tools")

        @mcp.tool()
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            return a + b

        @mcp.tool()
        def echo(text: str) -> str:
            """Say it back."""
            return text

        @mcp.tool()
        def fail(reason: str) -> str:
            """Always fails."""
            raise ToolError(f"failed: {reason}")

        @mcp.tool()
        def leak() -> str:
            """Fails with the server's own secret in the message."""
            raise ToolError(f"bad credentials {SECRET}")

        @mcp.prompt()
        def review(code: str) -> str:
            """Review some code."""
            return f"Please review: {code}"

        if extra is not None:
            extra(mcp)
        app = mcp.streamable_http_app()
        self.app = self._recording(app)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                                    lifespan="on"))

    def _recording(self, app):
        async def wrapped(scope, receive, send):
            if scope["type"] == "http":
                self.headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)
        return wrapped

    def start(self) -> ToolServer:
        """Serve in a thread until stop()."""
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.server.started, 20)
        return self

    @property
    def running(self) -> bool:
        """Serving (not stopped by a test)."""
        return self.thread.is_alive() and not self.server.should_exit

    def reset(self) -> ToolServer:
        """Forget the headers of earlier tests' requests (a module's tests share the server)."""
        self.headers = []
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.should_exit = True
        self.thread.join(10)
