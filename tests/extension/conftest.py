"""pytest-jupyter's server fixtures (jp_fetch, jp_ws_fetch, jp_serverapp) with mistudio_lab enabled,
on the session's real Redis (tests/conftest.py) and real worker processes.

pytest refuses `pytest_plugins` outside the top conftest, so the plugin's fixtures and hooks
are imported here: they apply to this folder only. `make install` installs mistudio_lab; a
plain checkout finds it in extensions/mistudio_lab.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import mistudio_lab  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "extensions" / "mistudio_lab"))

from pytest_jupyter.jupyter_server import *  # noqa: E402,F401,F403  (fixtures and hooks, this folder only)
from traitlets.config import Config  # noqa: E402

# Most tests poll the API faster than the production burst (10/second) allows: they count
# against a roomy window of their own; the rate-limit tests set the tier they check.
ROOMY = ["100000/minute"]


@pytest.fixture
def lab_rate_limits():
    """The server's MistudioLab.api_rate_limits (None: the production API tier)."""
    return ROOMY


@pytest.fixture
def lab_authorizer():
    """The server's authorizer class (None: jupyter_server's default, which allows every user)."""
    return None


@pytest.fixture
def jp_server_config(redis_db, lab_rate_limits, lab_authorizer):
    config = {"ServerApp": {"jpserver_extensions": {"mistudio_lab": True}}}
    if lab_authorizer is not None:
        config["ServerApp"]["authorizer_class"] = lab_authorizer
    if lab_rate_limits is not None:
        config["MistudioLab"] = {"api_rate_limits": lab_rate_limits}
    return Config(config)


@pytest.fixture
def fanout(jp_serverapp, jp_asyncio_loop):
    """The server process's fan-out; stopped (its Redis connections closed) after the test."""
    from mistudio_lab.handlers import FANOUT

    fan = jp_serverapp.web_app.settings[FANOUT]
    yield fan
    jp_asyncio_loop.run_until_complete(fan.stop())
