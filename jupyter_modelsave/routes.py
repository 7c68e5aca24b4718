"""The Jupyter server extension: HTTP handlers under ``<base_url>/modelsave/``.

Every verb is ``@tornado.web.authenticated``; ``scripts/check_auth.py`` fails the test
command when a handler lacks it.
"""

from __future__ import annotations

import json
from typing import Any

import tornado
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from . import __version__

NAMESPACE = "modelsave"


class HealthHandler(APIHandler):
    """``GET /modelsave/health``: the package version, so the sidebar can check the server side."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"status": "ok", "version": __version__}))


def setup_route_handlers(web_app: Any) -> None:
    base_url = web_app.settings["base_url"]
    handlers = [(url_path_join(base_url, NAMESPACE, "health"), HealthHandler)]
    web_app.add_handlers(".*$", handlers)
