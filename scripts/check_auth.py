"""Check that all endpoints of the extension require authentication.

When unauthenticated access is not allowed, Jupyter Server warns about every
handler which is missing an authentication decorator; this script turns such a
warning into a failure, so that no endpoint can be exposed to unauthorized users
by mistake.

Jupyter's check skips verbs that it allows without credentials itself (``OPTIONS`` of an
``APIHandler``) and verbs a handler does not implement (tornado answers those 405 before any
credential check). So this script also checks every verb of every route of this extension:
each implemented verb carries ``@tornado.web.authenticated``, and the handler refuses anonymous
requests of any verb in ``prepare`` (``routes.CredentialsRequired``).

Run it with:

    python scripts/check_auth.py
"""

import sys
import warnings

from jupyter_server.serverapp import ServerApp, _has_tornado_web_authenticated
from jupyter_server.utils import JupyterServerAuthWarning
from tornado import web

from jupyter_modelsave.routes import NAMESPACE, CredentialsRequired

# Initialize a server which only loads this extension and which does not allow
# unauthenticated access.
app = ServerApp(
    allow_unauthenticated_access=False,
    jpserver_extensions={"jupyter_modelsave": True},
    # Fail loudly if the extension cannot be loaded at all, instead of silently
    # reporting that there is nothing to complain about.
    reraise_server_extension_failures=True,
)

with warnings.catch_warnings(record=True) as records:
    warnings.simplefilter("always")
    app.initialize(argv=[], find_extensions=False, new_httpserver=False)

problems = [
    str(record.message)
    for record in records
    if issubclass(record.category, JupyterServerAuthWarning)
]


def extension_routes():
    """(pattern, handler class) of every route below ``<base_url>/modelsave/``."""
    prefix = f"{app.web_app.settings['base_url']}{NAMESPACE}/"
    for host_rule in app.web_app.default_router.rules:
        for rule in getattr(host_rule.target, "rules", []):
            pattern = rule.matcher.regex.pattern
            if pattern.startswith(prefix):
                yield pattern, rule.target


routes = list(extension_routes())
if len(routes) < 7:
    problems.append(f"only {len(routes)} routes of the extension found; is it loaded?")
for pattern, handler in routes:
    if not issubclass(handler, CredentialsRequired):
        problems.append(f"- {handler.__name__} ({pattern}) does not refuse anonymous verbs")
    for verb in handler.SUPPORTED_METHODS:
        method = getattr(handler, verb.lower())
        implemented = method is not web.RequestHandler._unimplemented_method
        if implemented and not _has_tornado_web_authenticated(method):
            problems.append(f"- {verb} of {handler.__name__} ({pattern}) lacks @authenticated")

if problems:
    sys.exit(
        "\n".join(problems)
        + "\n\nAdd a `@tornado.web.authenticated` decorator to the verb methods listed"
        " above. If an endpoint is intended to be public, add an explicit"
        " `@allow_unauthenticated` (or `@ws_authenticated` for websockets) decorator"
        " from `jupyter_server.auth.decorator` instead."
    )

print("All endpoints of the extension require authentication.")
