import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ("pytest_jupyter.jupyter_server",)

# Artifacts written by the tests are signed with a key of the test run, never the user's own
# (<jupyter data dir>/jupyter_modelsave_secret); kernels and child processes inherit it.
os.environ["JUPYTER_MODELSAVE_SECRET_FILE"] = str(
    Path(tempfile.mkdtemp(prefix="jms-test-key-")) / "jupyter_modelsave_secret"
)


@pytest.fixture(autouse=True)
def _recorder_left_as_found():
    """A test that starts the global call recorder (``%load_ext``, the widget, the kernel side)
    stops it again, so the hooks of one test never reach the next."""
    from jupyter_modelsave.core import discovery

    was_recording = discovery.is_recording()
    yield
    if not was_recording:
        discovery.stop_recording()


@pytest.fixture
def staging_dir(tmp_path: Path) -> Path:
    """The test server's staging folder (its own, so the server's stale sweep stays in it)."""
    folder = tmp_path / "staging"
    folder.mkdir()
    return folder


@pytest.fixture
def jp_server_config(jp_server_config, staging_dir):
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_modelsave": True},
            # test against a server that requires authentication on every endpoint
            "allow_unauthenticated_access": False,
        },
        "ModelSave": {"staging_dir": str(staging_dir)},
    }


def pytest_addoption(parser):
    parser.addoption(
        "--fresh-setup",
        action="store_true",
        help="run the README's demo command as a new normal user on a copy of the checkout, "
        "set-up included (5-10 minutes on 2 cores; tests/test_demo_command.py)",
    )
    parser.addoption(
        "--soak-count",
        type=int,
        default=None,
        help="stage/discard cycles for the soak test (default: a short run; the issue's full run is 200)",
    )
