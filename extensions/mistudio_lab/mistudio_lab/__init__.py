"""miStudio in JupyterLab: a jupyter_server extension (REST + WebSocket under {base_url}mistudio/api/)
and the sidebar's prebuilt frontend.

Enable it with `jupyter server extension enable mistudio_lab` (the wheel's
jupyter-config does it on install). The server talks to the Redis `mistudio up` started
(or REDIS_URL), as every miStudio process does, so several JupyterLab servers share one Redis.
"""

from __future__ import annotations

import logging

from mistudio_lab.fanout import Fanout
from mistudio_lab.handlers import FANOUT, routes
from mistudio_lab.ratelimit import SETTING, windows

logger = logging.getLogger("mistudio_lab")


def _jupyter_server_extension_points():
    return [{"module": "mistudio_lab"}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "mistudio-lab"}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Add the handlers (routes built from base_url) and this process's fan-out (started below)."""
    web_app = serverapp.web_app
    config = serverapp.config.get("MistudioLab", {})
    web_app.settings[SETTING] = windows(config.get("api_rate_limits") or None)
    web_app.settings[FANOUT] = Fanout()
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    serverapp.log.info("mistudio_lab: REST and events at %smistudio/api/", web_app.settings["base_url"])


async def _start_jupyter_server_extension(serverapp) -> None:
    """Once the loop runs: start the one Redis subscriber every socket of this process shares."""
    serverapp.web_app.settings[FANOUT].start()
