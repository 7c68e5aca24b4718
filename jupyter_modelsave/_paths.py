"""The staging folder shared by the kernel side (which writes) and the server extension (which serves).

The kernel and the Jupyter server run on the same machine. The server extension owns the
location (``ModelSave.staging_dir``, default ``<tempdir>/jupyter_modelsave-<user>/staging``) and
tells the sidebar, which passes it to the kernel side when it installs it. Each staged export is
published as ``<staging_dir>/<id>/`` with an ``index.json`` naming its files; ``<id>`` is an
opaque random hex string, the only thing the browser ever sends back.
"""

from __future__ import annotations

import getpass
import re
import tempfile
from pathlib import Path

INDEX_FILE = "index.json"
STAGING_ID = re.compile(r"^[0-9a-f]{32}$")


def default_staging_dir() -> Path:
    """``<tempdir>/jupyter_modelsave-<user>/staging``: per user, so users of one machine never mix."""
    try:
        user = re.sub(r"[^\w.-]", "_", getpass.getuser())
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "user"
    return Path(tempfile.gettempdir()) / f"jupyter_modelsave-{user}" / "staging"
