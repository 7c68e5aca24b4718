"""Netron's viewer as the server extension serves it: the patched page, its Content-Security-Policy
and the rule for which model URLs the page may open.

The page opens the model named by ``?url=`` or the ``#<url>`` hash (which wins), or a ``?gist=``.
Only this server's own graphs may be opened: ``<base_url>modelsave/staged/<id>/graph`` and
``<base_url>modelsave/download/<path>``, on this origin, without a query. ``own_graph_url``
checks ``?url=`` on the server; ``netron_guard.js``, inlined as the page's first script, checks
the hash (the server never sees it) and ``?url=`` again, and removes a refused one before Netron
reads it. ``CSP`` is the guarantee behind both: every fetch of the page and of its workers is
limited to this origin (``connect-src 'self'``), so a crafted link cannot make the viewer request
anything elsewhere.

What the viewer needs, read from netron's files (9.3.3) and checked in Chromium
(``ui-tests/tests/export.spec.ts`` records CSP violations while a graph renders): scripts, ES
modules and a module worker (``worker.js``) from its own folder; XHR to this origin (the model,
its ``*-metadata.json``); inline ``<style>`` and ``style=`` attributes in ``index.html``;
``data:`` images (its PNG export draws an SVG from a data URL). Nothing else: no ``eval`` (it
replaces ``window.eval`` with a thrower), no ``blob:`` fetches (its exports are downloads), no
frames, plugins or forms.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .core.errors import InvalidOptionError

GUARD_FILE = Path(__file__).with_name("netron_guard.js")
_OWN_PATH = re.compile(r"staged/[0-9a-f]{32}/graph|download/[^?#]+")
_UNSAFE = re.compile(r"[\\\x00-\x1f]|%(2f|5c|00)", re.I)


def netron_dir() -> Path:
    import netron

    return Path(netron.__file__).parent


@cache
def guard_script() -> str:
    return GUARD_FILE.read_text(encoding="utf-8")


@cache
def csp() -> str:
    """The Content-Security-Policy of the page and of every asset (a worker gets its own)."""
    guard = base64.b64encode(hashlib.sha256(guard_script().encode()).digest()).decode()
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'sha256-{guard}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-src 'none'",
            "frame-ancestors 'self'",
        ]
    )


@cache
def netron_index() -> str:
    """Netron's ``index.html`` with ``version`` 0.0.0, no ``date`` meta, no meta CSP, and the guard
    as its first script.

    A non-0.0.0 version turns on analytics and error reporting; the ``date`` meta makes the
    viewer refuse to run 180 days after its release. The consent prompt (and its IP look-up) is
    skipped by the ``consent`` cookie ``NetronPageHandler`` sets. Netron's meta CSP
    (``script-src 'self'``) would block the inline guard; ``CSP``, sent as a header, is stricter.
    """
    html = (netron_dir() / "index.html").read_text(encoding="utf-8")
    html = re.sub(
        r'<meta name="version" content="[^"]*">', '<meta name="version" content="0.0.0">', html
    )
    html = re.sub(r'<meta name="date" content="[^"]*">\s*', "", html)
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>\s*', "", html)
    head = html.index("<head>") + len("<head>")
    return f"{html[:head]}\n<script>{guard_script()}</script>{html[head:]}"


def own_graph_url(url: str, *, base_url: str, host: str, scheme: str) -> bool:
    """Whether ``url`` (a ``?url=`` value) names one of this server's graphs or artifacts (see
    the module docstring): absolute URLs name this server (``scheme://host``); no ``.``/``..``
    segments, encoded separators, backslashes or control characters; no query, fragment or
    credentials."""
    if _UNSAFE.search(url):
        return False
    parts = urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc:
        return False
    if (parts.scheme or parts.netloc) and (parts.scheme, parts.netloc) != (scheme, host):
        return False
    prefix = f"{base_url}modelsave/"
    if not parts.path.startswith(prefix):
        return False
    rest = parts.path[len(prefix) :]
    segments = [unquote(s) for s in rest.split("/")]
    if any(s in ("", ".", "..") or "/" in s or "\\" in s for s in segments):
        return False
    return _OWN_PATH.fullmatch(rest) is not None


def check_page_arguments(arguments: dict[str, list[bytes]], **where: str) -> None:
    """Refuse a page request whose ``?url=`` is not this server's, or that names a gist."""
    if "gist" in arguments:
        raise InvalidOptionError(
            "This viewer opens only the graphs of this server; gists are not opened."
        )
    for raw in arguments.get("url", []):
        url = raw.decode("utf-8", "replace")
        if not own_graph_url(url, **where):
            raise InvalidOptionError(
                f"This viewer opens only the graphs of this server (staged exports and written "
                f"artifacts), not {url[:200]!r}."
            )
