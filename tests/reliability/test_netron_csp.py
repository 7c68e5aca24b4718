"""Netron's page opens only this server's graphs, and cannot fetch from anywhere else.

Two layers: the page and every asset are served with a Content-Security-Policy whose
``connect-src`` is ``'self'`` (the browser refuses any fetch elsewhere, whatever the page's
scripts try), and the page refuses a model URL that is not one of this server's staged graphs or
written artifacts: on the server for ``?url=`` and ``?gist=``, and in the page's first script
(``netron_guard.js``) for the ``#<url>`` hash, which never reaches the server. The guard runs here
under Node with a stand-in ``location``; ``ui-tests/tests/netron.spec.ts`` runs it in Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from jupyter_modelsave import routes as jr

SID = "0123456789abcdef0123456789abcdef"
GUARD = Path(jr.__file__).with_name("netron_guard.js")


def policy(header: str) -> dict[str, list[str]]:
    """A CSP header as {directive: [sources]}."""
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


async def get(client, base_url: str, path: str, headers: dict[str, str]) -> Any:
    return await client.fetch(
        f"{base_url}{jr.NAMESPACE}/{path}", headers=headers, raise_error=False
    )


# --- the policy ---


@pytest.mark.parametrize(
    "path", ["netron/", "netron/index.html", "netron/browser.js", "netron/worker.js"]
)
async def test_the_viewer_and_its_assets_fetch_only_from_this_server(
    http_server_client, jp_base_url, jp_auth_header, path
) -> None:
    response = await get(http_server_client, jp_base_url, path, jp_auth_header)
    assert response.code == 200
    csp = policy(response.headers["Content-Security-Policy"])
    # Every fetch (XHR/fetch, scripts, workers, styles, images) is limited to this origin; the
    # only other sources are inline styles, data: images (Netron's PNG export) and the hash of
    # the guard script
    assert csp["default-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["script-src"][0] == "'self'" and all(
        s.startswith("'sha256-") for s in csp["script-src"][1:]
    )
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]
    assert csp["img-src"] == ["'self'", "data:"]
    for directive in ("object-src", "base-uri", "form-action", "frame-src"):
        assert csp[directive] == ["'none'"], directive
    assert csp["frame-ancestors"] == ["'self'"]
    # and no directive allows another origin or a scheme-wide source
    sources = {s for values in csp.values() for s in values}
    assert not {s for s in sources if "*" in s or "//" in s or s in ("http:", "https:", "blob:")}


async def test_the_page_has_one_inline_script_the_guard_allowed_by_its_hash(
    http_server_client, jp_base_url, jp_auth_header
) -> None:
    response = await get(http_server_client, jp_base_url, "netron/", jp_auth_header)
    html = response.body.decode()
    inline = re.findall(r"<script>(.*?)</script>", html, re.S)
    # The guard is the page's first script, inline, before Netron's own index.js
    assert inline == [GUARD.read_text(encoding="utf-8")]
    assert html.index("<script>") < html.index('src="index.js"')
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    csp = policy(response.headers["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'", f"'sha256-{digest}'"]
    # Netron's own meta policy (no inline script at all) is replaced by the header
    assert 'http-equiv="Content-Security-Policy"' not in html


# --- the server refuses ?url= and ?gist= that are not this server's graphs ---

# "~/" stands for the server's base_url
OWN = [
    f"~/modelsave/staged/{SID}/graph",
    "~/modelsave/download/exports/net_v1.0.0_abc.onnx",
    "~/modelsave/download/a%20b/n%C3%A9t.onnx",
]
FOREIGN = [
    "http://127.0.0.1:1/x.onnx",
    "https://example.org/model.onnx",
    "//example.org/model.onnx",
    "https://github.com/onnx/models/blob/main/x.onnx",
    "javascript:alert(1)",
    "data:application/octet-stream;base64,AAAA",
    "~/files/secret.onnx",
    "~/api/contents/x",
    f"~/modelsave/staged/{SID}/artifact",
    f"~/modelsave/staged/{SID}/graph?x=1",
    f"~/modelsave/staged/{SID}/graph/../../../../api/contents",
    "~/modelsave/download/../../api/contents",
    "~/modelsave/download/%2e%2e/%2e%2e/files/x.onnx",
    "~/modelsave/download/a%2F..%2F..%2Fx.onnx",
    "~/modelsave/download/a%5C..%5Cx.onnx",
    "~/modelsave/download/a\\..\\x.onnx",
    "~/modelsave/download/a\tb.onnx",
    "~/modelsave/download/",
    "~/modelsave/netron/x.onnx",
    f"/modelsave/staged/{SID}/graph",  # outside this server's base_url
    "modelsave/download/x.onnx",  # relative to the page: netron/modelsave/...
]


def at(url: str, base_url: str) -> str:
    return url.replace("~/", base_url, 1) if url.startswith("~/") else url


def _quote(url: str) -> str:
    return quote(url, safe="")


@pytest.mark.parametrize("url", OWN)
async def test_the_page_opens_this_servers_graphs(
    http_server_client, jp_base_url, jp_auth_header, url
) -> None:
    url = at(url, jp_base_url)
    origin = http_server_client.get_url("")
    for form in (url, f"{origin}{url}"):
        query = f"netron/?url={_quote(form)}&identifier=x.onnx"
        response = await get(http_server_client, jp_base_url, query, jp_auth_header)
        assert response.code == 200, form


@pytest.mark.parametrize("url", FOREIGN)
async def test_the_page_refuses_any_other_url(
    http_server_client, jp_base_url, jp_auth_header, url
) -> None:
    query = f"netron/?url={_quote(at(url, jp_base_url))}"
    response = await get(http_server_client, jp_base_url, query, jp_auth_header)
    assert response.code == 400, url
    assert "this server" in response.body.decode()


@pytest.mark.parametrize("query", ["gist=abc", "url=&gist=1"])
async def test_the_page_refuses_a_gist(http_server_client, jp_base_url, jp_auth_header, query):
    response = await get(http_server_client, jp_base_url, f"netron/?{query}", jp_auth_header)
    assert response.code == 400


# --- the guard, for the #<url> hash the server never sees ---

NODE = shutil.which("node")
GUARD_HARNESS = """
const fs = require('fs');
const [source, cases] = [fs.readFileSync(process.argv[1], 'utf8'), JSON.parse(process.argv[2])];
const results = [];
for (const href of cases) {
  const url = new URL(href);
  const location = {
    href: url.href, origin: url.origin, pathname: url.pathname, search: url.search,
    hash: url.hash,
  };
  let replaced = null;
  const history = { replaceState: (s, t, to) => { replaced = to; } };
  const listeners = {};
  const window = { addEventListener: (name, fn) => { listeners[name] = fn; } };
  const document = { body: { appendChild: () => {} }, createElement: () => ({
    setAttribute() {}, style: {} }) };
  new Function('location', 'history', 'window', 'document', 'URL', 'URLSearchParams', source)(
    location, history, window, document, URL, URLSearchParams);
  results.push(replaced === null ? 'kept' : 'removed');
}
console.log(JSON.stringify(results));
"""


def guard(hrefs: list[str]) -> list[str]:
    """What the guard does with each page address: 'kept' or 'removed' (search and hash)."""
    done = subprocess.run(
        [NODE, "-e", GUARD_HARNESS, str(GUARD), json.dumps(hrefs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_the_guard_keeps_only_this_servers_graphs() -> None:
    page = "http://localhost:8888/base/modelsave/netron/"
    own = [at(u, "/base/") for u in OWN]
    kept = [f"{page}#{u}" for u in own] + [f"{page}?url={_quote(u)}" for u in own]
    kept += [f"{page}index.html#{own[0]}", f"{page}#http://localhost:8888{own[0]}", page]
    foreign = [at(u, "/base/") for u in FOREIGN]
    # (a raw tab in an address is dropped by the URL parser itself, so only ?url= can carry it)
    removed = [f"{page}#{u}" for u in foreign if "\t" not in u]
    removed += [f"{page}?url={_quote(u)}" for u in foreign]
    removed += [
        f"{page}?gist=abc",
        f"{page}#{own[0]}?url=x",
        f"{page}?url={_quote(own[0])}#http://127.0.0.1:1/x.onnx",  # the hash wins in Netron
        f"{page}#http://localhost:9999{own[0]}",  # another port: another origin
        f"{page}#http://user:pw@localhost:8888{own[0]}",
    ]
    assert guard(kept) == ["kept"] * len(kept)
    assert guard(removed) == ["removed"] * len(removed)
