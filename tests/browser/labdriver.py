"""JupyterLab in a real browser for tests: a Lab server on a free loopback port with a token (this
session's environment: PYTHONPATH, MISTUDIO_HOME, its Redis), and Playwright helpers that do what a
person does: open a notebook, Run All, type a cell, save, reopen.

Lab runs with windowing off (every cell is rendered, so every output can be checked), news and
update checks off, and its own settings, workspaces and runtime folders."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from helpers import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
WIDGET_ERROR = "Error displaying widget"


def wait_until(predicate, timeout: float, interval: float = 0.25, message: str = "condition"):
    """helpers.wait_for at a pace for page queries (each asks the browser)."""
    return wait_for(predicate, timeout, interval, message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    def __init__(self, root: Path, state: Path, *, args: list[str] = (), env: dict | None = None):
        self.root, self.state = root, state
        self.args, self.env = list(args), dict(env or {})
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> "LabServer":
        settings = self.state / "settings"
        for name, value in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(self.state / "runtime"), **self.env)
        self.log = open(self.state / "lab.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={self.state / 'workspaces'}", "--ServerApp.allow_root=True", *self.args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        wait_until(self._ready, timeout, 0.5, f"JupyterLab on {self.url} (log: {self.log.name})")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{Path(self.log.name).read_text()}")
        try:
            return self.api("GET", "status") is not None
        except OSError:
            return False

    def api(self, method: str, path: str):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def shutdown_kernels(self) -> None:
        """What closing and shutting down does: the kernels, and their widget models, are gone."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")
        wait_until(lambda: self.api("GET", "kernels") == [], 30, message="kernels shut down")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class Notebook:
    """One notebook open in a page."""

    def __init__(self, page, lab: LabServer, name: str):
        self.page, self.lab, self.name = page, lab, name

    def open(self, timeout: float = 120.0) -> "Notebook":
        """Open it, take the kernel Lab proposes (its "Select Kernel" dialog), wait for it to be idle."""
        self.page.goto(f"{self.lab.url}/lab/tree/{self.name}?reset&token={self.lab.token}")  # only this notebook open
        self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while not self._kernel_idle():
            dialog = self.page.locator(".jp-Dialog .jp-mod-accept")
            if dialog.count():
                dialog.first.click()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no idle kernel for {self.name} after {timeout:.0f} s")
            time.sleep(0.25)
        return self

    def _kernel_idle(self) -> bool:
        try:
            kernels = self.lab.api("GET", "kernels")
        except urllib.error.HTTPError as exc:  # 500 while a kernel starts (its last_activity not yet set)
            if exc.code != 500:
                raise
            return False
        return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels) and \
            self.page.locator(".jp-Dialog").count() == 0

    @property
    def cells(self):
        return self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")

    def cell_with(self, source: str):
        """The code cell whose input contains source."""
        return self.cells.filter(has=self.page.locator(".jp-InputArea", has_text=source)).first

    def menu(self, *path: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=path[0]).first.click()
        for label in path[1:]:
            self.page.locator(".lm-Menu-itemLabel", has_text=label).first.click()

    def run_all(self) -> None:
        self.menu("Run", "Run All Cells")

    def prompts(self) -> list[str]:
        return [p.strip() for p in self.page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()]

    def all_ran(self) -> bool:
        """Every code cell has an execution count and none is queued or running."""
        prompts = self.prompts()
        return bool(prompts) and all(p.startswith("[") and p[1:-2].isdigit() for p in prompts)

    def add_cell_at_end(self, source: str):
        """Select the last cell, add a code cell below it, type source (as a person would); the new cell."""
        added = self.cells.nth(self.cells.count())
        self.cells.last.locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("b")
        self.page.keyboard.press("Enter")
        self.page.keyboard.type(source)
        return added

    def run_current_cell(self) -> None:
        self.page.keyboard.press("Shift+Enter")

    def save(self) -> None:
        self.page.keyboard.press("Control+s")

    def text(self) -> str:
        return self.page.locator(".jp-NotebookPanel").inner_text()


def copy_notebook(name: str, into: Path) -> Path:
    source = Path(__file__).resolve().parents[2] / "notebooks" / name
    target = into / name
    shutil.copyfile(source, target)
    return target
