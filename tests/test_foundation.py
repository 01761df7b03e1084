"""Foundation: settings, the embedded Redis, the connection factory and `mistudio up/down/status`."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
import redis

from helpers import run_cli
from mistudio.errors import InvalidInput
from mistudio.settings import get_settings


def _home_env(tmp_path, **extra) -> dict:
    """Environment for a CLI run against its own MISTUDIO_HOME (its own embedded Redis)."""
    return {"MISTUDIO_HOME": str(tmp_path / "home"), **extra}


# --- settings -----------------------------------------------------------------------


def test_settings_use_the_seeds_databases_and_accept_overrides(monkeypatch):
    s = get_settings()
    assert s.databases == {"queue": 0, "results": 1, "pubsub": 2, "ratelimit": 3, "cache": 4, "locks": 5}
    monkeypatch.setenv("REDIS_DB_CACHE", "9")
    assert get_settings().db("cache") == 9


def test_bad_setting_names_the_variable_and_the_fix(monkeypatch):
    monkeypatch.setenv("REDIS_DB_QUEUE", "zero")
    with pytest.raises(InvalidInput, match="REDIS_DB_QUEUE.*integer"):
        get_settings()
    monkeypatch.setenv("REDIS_DB_QUEUE", "0")
    monkeypatch.setenv("MISTUDIO_PROFILE", "huge")
    with pytest.raises(InvalidInput, match="MISTUDIO_PROFILE.*default, ci"):
        get_settings()


def test_ci_profile_shrinks_sizes_only():
    from mistudio.settings import PROFILES

    ci, default = PROFILES["ci"], PROFILES["default"]
    assert ci.train_tokens < default.train_tokens and ci.corpus_max_tokens < default.corpus_max_tokens
    # the profile holds sizes only: nothing about limits or safety
    assert not any("limit" in name or "password" in name for name in ci.__dataclass_fields__)


# --- the embedded server ---------------------------------------------------------------


def test_embedded_redis_refuses_clients_without_the_password(redis_server):
    anonymous = redis.Redis(host=redis_server["host"], port=redis_server["port"])
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.set("k", "v")
    wrong = redis.Redis(host=redis_server["host"], port=redis_server["port"], password="not-it")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()


def test_passwords_and_generated_config_are_private(redis_server):
    from mistudio.redis import server

    settings = get_settings()
    password, admin = server.read_password(settings), server.read_admin_password(settings)
    assert password and admin and len(password) >= 32 and len(admin) >= 32 and password != admin
    config = settings.pid_dir / "redis.conf"
    for path in (server.password_path(settings), server.admin_password_path(settings), config):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    running = server.read_state(settings)  # the server now running (a fault test may have restarted it)
    cmdline = open(f"/proc/{running['pid']}/cmdline", "rb").read().decode()
    for secret in (password, admin):
        assert secret not in cmdline  # `ps` never shows it
        assert secret not in config.read_text()  # the config holds only its SHA-256
        assert secret not in open(running["log"]).read()


def test_databases_are_separate(redis_db):
    from mistudio.redis import keys

    redis_db("cache").set(keys.PROBE_KEY, "cache")
    assert redis_db("cache").get(keys.PROBE_KEY) == "cache"
    assert redis_db("queue").get(keys.PROBE_KEY) is None


def test_embedded_config_has_the_deliberate_changes(redis_db, redis_admin):
    config = redis_admin("queue").config_get("*")
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["bind"] == "127.0.0.1"
    assert config["slowlog-log-slower-than"] == "10000"
    assert "pubsub 33554432 8388608 60" in config["client-output-buffer-limit"]


def test_unreachable_redis_fails_fast_with_a_clear_message(monkeypatch):
    from mistudio.redis.connection import RedisUnavailable, get_client, reset_pools

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    reset_pools()
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as info:
        get_client("queue").ping()
    assert time.monotonic() - started < 3
    assert "redis://127.0.0.1:1" in str(info.value) and "mistudio up" in str(info.value)


def test_redis_url_database_is_ignored_in_favour_of_each_purposes_database(monkeypatch, redis_server):
    from mistudio.redis import server
    from mistudio.redis.connection import get_client, reset_pools

    password = server.read_password(get_settings())
    monkeypatch.setenv("REDIS_URL", f"redis://mistudio:{password}@{redis_server['host']}:{redis_server['port']}/7")
    reset_pools()
    client = get_client("cache")
    assert client.connection_pool.connection_kwargs["db"] == 4
    assert client.ping()
    assert password not in client.mistudio_url  # never echo the password
    reset_pools()


def test_refuses_to_listen_beyond_loopback_without_a_password(tmp_path, monkeypatch):
    from mistudio.redis import server

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("MISTUDIO_REDIS_BIND", "0.0.0.0")
    monkeypatch.setenv("REDIS_PASSWORD", "")
    with pytest.raises(InvalidInput, match="MISTUDIO_REDIS_BIND.*without a password"):
        server.start()


def test_binary_resolution_reports_a_bad_override(monkeypatch):
    from mistudio.redis import server

    monkeypatch.setenv("MISTUDIO_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(InvalidInput, match="MISTUDIO_REDIS_SERVER"):
        server.find_binary()
    monkeypatch.delenv("MISTUDIO_REDIS_SERVER")
    path, version = server.find_binary()
    assert os.access(path, os.X_OK) and version >= (6, 2)


# --- the CLI, as a user runs it ---------------------------------------------------------


def test_up_status_down_persists_data_across_restarts(tmp_path):
    env = _home_env(tmp_path)
    up = run_cli("up", "--no-workers", env=env)  # output captured: `up` must not hold our pipes
    assert up.returncode == 0, up.stderr
    assert "redis://127.0.0.1:" in up.stdout

    status = run_cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["redis"]["embedded"] is True
    assert data["redis"]["version"].startswith(("6.", "7.", "8."))
    assert data["redis"]["maxmemory_policy"] == "noeviction"
    assert data["redis"]["persistence"]["aof_enabled"] is True
    assert set(data["queues"]) == {"gpu", "io", "cpu"}
    url_before = data["redis"]["url"]

    port = data["redis"]["port"]
    password = (tmp_path / "home" / "redis" / "password").read_text().strip()
    app = dict(port=port, username="mistudio", password=password, db=4)
    redis.Redis(**app).set("cache:survives", "down-and-up")

    assert run_cli("up", "--no-workers", env=env).returncode == 0  # idempotent: reuses the server
    down = run_cli("down", env=env)
    assert down.returncode == 0, down.stderr
    assert run_cli("status", env=env).returncode != 0

    assert run_cli("up", "--no-workers", env=env).returncode == 0
    data = json.loads(run_cli("status", "--json", env=env).stdout)
    assert data["redis"]["url"] == url_before  # same port again
    assert redis.Redis(**app).get("cache:survives") == b"down-and-up"
    assert run_cli("down", env=env).returncode == 0


def test_status_against_an_unreachable_url_fails_fast(tmp_path):
    started = time.monotonic()
    result = run_cli("status", env=_home_env(tmp_path, REDIS_URL="redis://127.0.0.1:1"))
    assert time.monotonic() - started < 10  # includes interpreter start-up
    assert result.returncode != 0
    assert "redis://127.0.0.1:1" in result.stderr and "mistudio up" in result.stderr


def test_status_without_a_running_server_says_to_run_up(tmp_path):
    result = run_cli("status", env=_home_env(tmp_path))
    assert result.returncode != 0
    assert "mistudio up" in result.stderr and "not running" in result.stderr
