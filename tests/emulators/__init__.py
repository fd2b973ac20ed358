"""Provider emulators: small real HTTP servers that speak each provider's documented protocol,
so plugins are tested through their real HTTP client over real sockets."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class ServerThread:
    """A threaded werkzeug server on 127.0.0.1 and a free port, serving `app` until stopped."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def source_settings(
    slug: str,
    *,
    client_id: str,
    client_secret: str,
    authorize_url: str,
    token_url: str,
    api_url: str,
    history_days: int,
    **extra: str,
) -> dict[str, str]:
    """SOURCE_SETTINGS pointing a source at an emulator; `extra` are more keys of that source
    (`PER_PAGE="4"` is SOURCE_<SLUG>_PER_PAGE)."""
    prefix = f"SOURCE_{slug.upper()}_"
    values = {
        "CLIENT_ID": client_id,
        "CLIENT_SECRET": client_secret,
        "AUTHORIZE_URL": authorize_url,
        "TOKEN_URL": token_url,
        "API_URL": api_url,
        "HISTORY_DAYS": str(history_days),
        **extra,
    }
    return {prefix + key: value for key, value in values.items()}
