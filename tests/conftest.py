import pytest

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture
def jp_server_config(jp_server_config):
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_modelsave": True},
            # test against a server that requires authentication on every endpoint
            "allow_unauthenticated_access": False,
        }
    }


def pytest_addoption(parser):
    parser.addoption(
        "--soak-count",
        type=int,
        default=None,
        help="stage/discard cycles for the soak test (default: a short run; the issue's full run is 200)",
    )
