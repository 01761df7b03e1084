"""The mistudio-lab wheel carries the frontend prebuilt, so `pip install` of it needs no Node: the
built labextension lands in share/jupyter/labextensions/mistudio-lab and the server extension is
enabled by a jupyter_server_config.d file; sources and build tooling stay out.

Building the wheel runs the same hatch build `pip wheel extensions/mistudio_lab` does (its build
hook skips jlpm when `make install` has built the labextension already)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXTENSION = Path(__file__).resolve().parents[1] / "extensions" / "mistudio_lab"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # A copy without node_modules: the build must not depend on the developer's tree beyond sources
    # and the prebuilt labextension.
    source = tmp_path_factory.mktemp("src") / "mistudio_lab"
    shutil.copytree(EXTENSION, source, ignore=shutil.ignore_patterns("node_modules", ".yarn", "lib"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = out.glob("mistudio_lab-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_the_prebuilt_labextension_and_enables_the_server_extension(wheel):
    names = wheel.namelist()
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n) + "/data/"
    labext = data + "share/jupyter/labextensions/mistudio-lab/"
    manifest = json.loads(wheel.read(labext + "package.json"))
    assert manifest["name"] == "mistudio-lab" and manifest["jupyterlab"]["_build"]["load"].startswith("static/")
    assert labext + manifest["jupyterlab"]["_build"]["load"] in names  # the remoteEntry Lab loads
    assert labext + "static/style.js" in names and labext + "install.json" in names
    config = json.loads(wheel.read(data + "etc/jupyter/jupyter_server_config.d/mistudio_lab.json"))
    assert config == {"ServerApp": {"jpserver_extensions": {"mistudio_lab": True}}}
    assert "mistudio_lab/__init__.py" in names


def test_the_wheel_holds_no_sources_dependencies_or_build_tooling(wheel):
    names = wheel.namelist()
    assert not [n for n in names if "node_modules" in n or n.endswith((".ts", ".tsbuildinfo", "yarn.lock"))]
    assert not [n for n in names if n.startswith(("src/", "lib/", "mistudio_lab/labextension/"))]
    assert sum(info.file_size for info in wheel.infolist()) < 2_000_000, "the wheel should stay small"
