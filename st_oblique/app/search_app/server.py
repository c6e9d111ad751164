"""The app's web server: a FastAPI application with the read-only image route, the gradio page mounted at ``/``, run
by uvicorn on 127.0.0.1 unless told otherwise.

Private by default: gradio's analytics are off (``GRADIO_ANALYTICS_ENABLED=False`` and ``analytics_enabled=False``),
the page uses system fonts and gradio's bundled scripts only (no web fonts, no CDN), server-side rendering (a Node
process), the MCP server, the monitoring dashboard, the browser-side run history and the PWA manifest are off, and
FastAPI's own documentation pages (which load scripts from a CDN) are not routed.

Example::

    from st_oblique.app.search_app.server import BackgroundServer, create_app

    with BackgroundServer(create_app(engine), port=0) as server:   # port 0: any free port
        print(server.url)                                           # http://127.0.0.1:43127/
"""

from __future__ import annotations

import os
import threading
import time

# before gradio is imported anywhere: its import-time and launch-time telemetry read this variable
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr
import uvicorn
from fastapi import FastAPI

from st_oblique.app.search_app.engine import SearchEngine
from st_oblique.app.search_app.file_route import image_router
from st_oblique.app.search_app.ui import CSS, THEME_FONTS, build_blocks

__all__ = ["LOCAL_HOST", "BackgroundServer", "create_app"]

LOCAL_HOST = "127.0.0.1"


def create_app(
    engine: SearchEngine, *, top_k: int = 10, index_note: str = "", host: str = LOCAL_HOST, port: int = 7860
) -> FastAPI:
    """The FastAPI application: ``GET /images/...`` (the corpus's images, read-only) and the gradio page at ``/``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(image_router(engine.corpus))
    blocks = build_blocks(engine, top_k=top_k, index_note=index_note)
    return gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        server_name=host,
        server_port=port,
        footer_links=["api"],
        run_history=False,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
        enable_monitoring=False,
        show_error=False,
        theme=gr.themes.Default(**THEME_FONTS),
        css=CSS,
    )


class BackgroundServer:
    """``app`` served by uvicorn in a background thread, as a context manager (the command waits on it with
    :meth:`wait`; tests and notebooks use it directly).

    Args:
        app: the FastAPI application.
        host: the address to listen on.
        port: the port (0: any free port; ``url`` has the one chosen).
        timeout: seconds to wait for the server to start.
    """

    def __init__(self, app: FastAPI, host: str = LOCAL_HOST, port: int = 0, timeout: float = 60.0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.host = host
        self.timeout = timeout
        self.thread = threading.Thread(target=self.server.run, name="st-oblique-app", daemon=True)
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"The app's server could not start on {self.host}:{self.server.config.port} (is the port in use? "
                    "choose another with --port, or 0 for any free port)."
                )
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        shown = (
            "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else f"[{self.host}]" if ":" in self.host else self.host
        )
        self.url = f"http://{shown}:{port}/"
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C, SIGTERM through ``st-oblique``'s handler, or a server error)."""
        while self.thread.is_alive():
            self.thread.join(timeout=0.5)

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
