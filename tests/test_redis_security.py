"""Least privilege in Redis: the app's ACL user (everything miStudio runs as) is refused the
administrative commands and every key or channel outside miStudio's families; the admin user
(lifecycle, fixtures) is not; the embedded server listens beyond loopback only when told to;
an external Redis without ACL users keeps working with a plain password."""

from __future__ import annotations

import hashlib
import inspect
import logging
import subprocess
import time

import pytest
import redis

from helpers import run_cli, wait_for
from mistudio import cache, events, jobs, lifecycle, limits
from mistudio.errors import InvalidInput, MistudioError
from mistudio.redis import acl, keys
from mistudio.redis.connection import reset_pools
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(180)

REFUSED = [
    ("CONFIG", "SET", "dir", "/tmp"),
    ("CONFIG", "GET", "dir"),
    ("SAVE",),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("DEBUG", "SLEEP", "0"),
    ("MODULE", "LOAD", "/tmp/evil.so"),
    ("KEYS", "*"),
    ("SHUTDOWN", "NOSAVE"),
    ("SCRIPT", "FLUSH"),
    ("SCRIPT", "KILL"),
    ("ACL", "LIST"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("MONITOR",),
]


@pytest.fixture
def refused_on_purpose(redis_db, redis_admin):
    """For tests that provoke refusals: the ACL LOG is cleared after them (conftest checks it)."""
    yield redis_db
    redis_admin().acl_log_reset()


def _app_refusals(admin) -> list[dict]:
    return [e for e in admin.acl_log() if e["reason"] != "auth" and e["username"] == acl.APP_USER]


@pytest.mark.parametrize("command", REFUSED, ids=lambda c: " ".join(c[:2]))
def test_the_app_user_is_refused_administrative_commands(refused_on_purpose, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        refused_on_purpose("queue").execute_command(*command)


def test_the_admin_user_may_do_what_the_app_user_may_not(redis_db, redis_admin):
    admin = redis_admin("queue")
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert admin.execute_command("DEBUG", "SLEEP", "0") in (b"OK", "OK", True)
    assert isinstance(admin.keys("*"), list)
    assert admin.execute_command("MODULE", "LIST") == []
    scratch = redis_admin("locks")
    scratch.set("admin:probe", "1")
    assert scratch.flushdb() and not scratch.exists("admin:probe")
    assert admin.script_flush()
    # Scripts come back by themselves (redis-py reloads on NOSCRIPT): the app user may SCRIPT LOAD.
    assert limits.hit(["api"]).allowed


def test_the_admin_user_shuts_the_server_down(tmp_path, monkeypatch):
    from mistudio.redis import server

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path))
    state = server.start()
    try:
        assert server.stop()
    finally:
        server.stop()
    log = open(state["log"]).read()
    assert "User requested shutdown" in log  # SHUTDOWN as the admin user, not the SIGTERM fallback


def test_the_app_user_touches_only_mistudio_keys_and_channels(refused_on_purpose):
    app = refused_on_purpose("cache")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.set("other:key", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.publish("other:channel", "1")
    with pytest.raises(redis.exceptions.ResponseError, match="can't access"):  # inside a script too
        app.eval("return redis.call('GET', 'other:key')", 0)
    assert app.set(keys.PROBE_KEY, "1") and app.publish(keys.training_channel("tr_1"), "x") == 0


def _sample(function):
    """Call a keys.py function with a sample string for every parameter (seconds: a number)."""
    params = inspect.signature(function).parameters
    return function(*(60 if name == "seconds" else "x" for name in params))


def test_every_key_and_channel_name_is_in_an_acl_family():
    names = {name: _sample(f) for name, f in vars(keys).items()
             if inspect.isfunction(f) and f.__module__ == keys.__name__}
    names |= {name: value for name, value in vars(keys).items() if isinstance(value, str) and name.isupper()}
    assert len(names) > 30
    channels = {n for n in names if n.endswith(("_channel", "_CHANNEL"))}
    for name, value in names.items():
        prefixes = keys.CHANNEL_PREFIXES if name in channels else keys.KEY_PREFIXES
        assert value.startswith(tuple(prefixes)), f"keys.{name} -> {value!r} is in no family of keys.py"
    for namespace, policy in cache.POLICIES.items():
        assert policy.template.startswith(tuple(keys.KEY_PREFIXES)), namespace
    rules = acl.app_rules()
    assert {f"~{p}*" for p in keys.KEY_PREFIXES} | {f"&{p}*" for p in keys.CHANNEL_PREFIXES} <= set(rules)
    assert "~*" not in rules and "allkeys" not in rules and "&*" not in rules


def test_everything_mistudio_does_runs_as_the_app_user(workers, redis_admin):
    admin = redis_admin()
    admin.acl_log_reset()
    workers.start("cpu", MISTUDIO_HEARTBEAT_INTERVAL=0.5, MISTUDIO_HEARTBEAT_TTL=3, MISTUDIO_STATUS_INTERVAL=1)
    with events.Subscription(keys.SYSTEM_STATUS_CHANNEL) as statuses:
        job = jobs.submit("diagnostics.echo", {"hello": "acl"})
        assert job.result(timeout=60) is not None
        assert wait_for(lambda: statuses.get(timeout=1), timeout=30, message="a system.status from the leader")
    cache.get_or_compute("dataset", lambda: {"tokens": 1}, dataset_id="acl")
    cache.clear()
    status = lifecycle.status()
    assert status["redis"]["user"] == acl.APP_USER and status["workers"] and status["leader"]
    assert {c["user"] for c in admin.client_list()} - {acl.ADMIN_USER} == {acl.APP_USER}
    assert _app_refusals(admin) == []


def test_a_training_its_features_and_status_run_entirely_as_the_app_user(workers, redis_admin):
    """The whole path a user takes (train, extract, read the features, status) refused nothing."""
    from mistudio import feature_queries

    admin = redis_admin()
    admin.acl_log_reset()
    workers.start("gpu", lease=10)
    training = jobs.submit("train_sae", {"steps": 30, "checkpoint_every": 10, "log_every": 5})
    assert training.result(timeout=300)["final_metrics"]["step"] == 30
    extraction = jobs.submit("extract_features", {"training_id": training.id, "n_tokens": 1500})
    assert extraction.result(timeout=300)["total_features"] > 0
    assert feature_queries.dictionary_stats(training.id)["total_features"] > 0
    status = lifecycle.status()
    assert status["redis"]["user"] == acl.APP_USER and status["workers"] and status["leader"]
    assert {c["user"] for c in admin.client_list()} - {acl.ADMIN_USER} == {acl.APP_USER}
    assert _app_refusals(admin) == []


def _local_address() -> str | None:
    """An IPv4 address of this machine beyond loopback (None: it has none)."""
    import psutil
    import socket

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


@pytest.fixture
def open_redis(tmp_path):
    """redis(password) -> URL: a Redis on this machine's non-loopback address, as people run it by
    mistake (protected mode off, no password) or with a requirepass."""
    from mistudio.redis import server

    host = _local_address()
    if host is None:
        pytest.skip("this machine has no address beyond loopback")
    procs = []

    def start(password: str | None) -> str:
        binary, _ = server.find_binary()
        port = server.free_port(host)
        config = tmp_path / f"open-{port}.conf"
        config.write_text(f"port {port}\nbind {host}\nprotected-mode no\nsave \"\"\ndir \"{tmp_path}\"\n"
                          + (f"requirepass {password}\n" if password else ""))
        procs.append(subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        probe = redis.Redis(host=host, port=port, password=password)
        wait_for(lambda: _answers(probe), timeout=20, message="the open Redis")
        return f"redis://{host}:{port}"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


def test_a_worker_refuses_a_redis_beyond_loopback_without_a_password(redis_db, tmp_path, monkeypatch):
    env = {"REDIS_URL": "redis://192.0.2.254:6379", "MISTUDIO_HOME": str(tmp_path)}
    result = run_cli("worker", "-q", "cpu", env=env)
    assert result.returncode == 1
    assert ("error: REDIS_PASSWORD: Redis at redis://192.0.2.254:6379 is beyond loopback and no password is set"
            in result.stderr), result.stderr
    assert "mistudio redis-acl" in result.stderr
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_pools()
    try:
        started = time.monotonic()
        with pytest.raises(InvalidInput, match="REDIS_PASSWORD: .*beyond loopback"):
            lifecycle.up()
        assert time.monotonic() - started < 1  # refused before any connection is tried
        assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()  # nothing was started
    finally:
        reset_pools()


def test_a_worker_refuses_a_redis_that_answers_without_a_password_even_when_it_has_one(open_redis, redis_db,
                                                                                      monkeypatch):
    from mistudio.redis.guard import require_password_beyond_loopback

    url = open_redis(None)
    result = run_cli("worker", "-q", "cpu", env={"REDIS_URL": url, "REDIS_PASSWORD": "ours"})
    assert result.returncode == 1
    assert f"REDIS_URL: Redis at {url} answers a client that sends no password" in result.stderr, result.stderr
    assert "ours" not in result.stderr
    monkeypatch.setenv("REDIS_URL", open_redis("s3cret-pass"))
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pass")
    require_password_beyond_loopback(get_settings())  # a password, and the server wants one: accepted


def test_passwords_are_on_no_command_line_and_in_no_log(tmp_path, monkeypatch):
    """`mistudio up` (Redis and the workers), a job, `mistudio down`: their argv, output and logs."""
    import psutil

    from mistudio import services
    from mistudio.redis import server

    env = {"MISTUDIO_HOME": str(tmp_path)}
    up = run_cli("up", env=env, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path))
        settings = get_settings()
        secrets = [server.read_password(settings), server.read_admin_password(settings)]
        records = services.list_records(settings)
        monkeypatch.undo()
        assert all(secrets) and len(records) == 4  # redis and three workers
        submitted = run_cli("submit", "diagnostics.echo", "-p", "x=1", "--wait", env=env, timeout=120)
        assert submitted.returncode == 0, submitted.stderr
        for record in records:
            argv = " ".join(psutil.Process(record.pid).cmdline())
            assert not any(secret in argv for secret in secrets), record.name
    finally:
        down = run_cli("down", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    printed = up.stdout + up.stderr + submitted.stdout + submitted.stderr + down.stdout + down.stderr
    logs = "".join(path.read_text(errors="replace") for path in (tmp_path / "logs").glob("*.log"))
    assert "User requested shutdown" in logs  # down shut Redis down as the admin user
    for secret in secrets:
        assert secret not in printed and secret not in logs
        assert not any(secret in path.read_text(errors="replace") for path in (tmp_path / "run").glob("*"))


def test_binding_beyond_loopback_needs_explicit_permission_and_a_password(tmp_path, monkeypatch, caplog):
    from mistudio.redis import server

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("MISTUDIO_REDIS_BIND", "0.0.0.0")
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="MISTUDIO_REDIS_BIND.*beyond loopback.*MISTUDIO_REDIS_ALLOW_REMOTE=on"):
        server.start()
    assert time.monotonic() - started < 1
    monkeypatch.setenv("MISTUDIO_REDIS_ALLOW_REMOTE", "on")
    monkeypatch.setenv("REDIS_PASSWORD", "")
    with pytest.raises(InvalidInput, match="without a password"):
        server.start()
    monkeypatch.delenv("REDIS_PASSWORD")
    assert server.read_state() is None  # nothing was started by the refusals
    with caplog.at_level(logging.WARNING, logger="mistudio.redis.server"):
        state = server.start()
    try:
        assert state["bind"] == "0.0.0.0"
        assert any("beyond loopback" in r.getMessage() for r in caplog.records)
        password = server.read_password(get_settings())
        assert password not in caplog.text
        anonymous = redis.Redis(port=state["port"])
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.set("cache:x", "1")
        assert redis.Redis(port=state["port"], username=acl.APP_USER, password=password).ping()
    finally:
        server.stop()
        reset_pools()


def test_the_embedded_redis_bound_to_one_lan_address_serves_this_devices_clients_there(tmp_path, monkeypatch):
    """A cluster's Redis host: `MISTUDIO_REDIS_BIND=<its address>`; its own workers connect there too."""
    from mistudio.redis import server
    from mistudio.redis.connection import get_client

    host = _local_address()
    if host is None:
        pytest.skip("this machine has no address beyond loopback")
    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("MISTUDIO_REDIS_BIND", host)
    monkeypatch.setenv("MISTUDIO_REDIS_ALLOW_REMOTE", "on")
    reset_pools()
    try:
        state = server.start()
        assert state["bind"] == host and state["host"] == host
        assert get_client("queue").ping() and lifecycle.redis_status()["user"] == acl.APP_USER
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=state["port"], socket_connect_timeout=1).ping()  # not on loopback: only where bound
        # Another device joining it (REDIS_URL, the app user's password) passes the worker's check.
        from mistudio.redis.guard import require_password_beyond_loopback

        monkeypatch.setenv("REDIS_URL", f"redis://{acl.APP_USER}@{host}:{state['port']}")
        monkeypatch.setenv("REDIS_PASSWORD", server.read_password(get_settings()))
        require_password_beyond_loopback(get_settings())
        monkeypatch.delenv("REDIS_URL")
        monkeypatch.delenv("REDIS_PASSWORD")
    finally:
        server.stop()
        reset_pools()


@pytest.fixture
def plain_redis(tmp_path):
    """A Redis as many people run it: no ACL users, a requirepass (the default user)."""
    from mistudio.redis import server

    binary, _ = server.find_binary()
    port = server.free_port()
    config = tmp_path / "plain.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\nrequirepass plain-secret\nsave \"\"\ndir \"{tmp_path}\"\n")
    proc = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password="plain-secret")
    wait_for(lambda: _answers(client), timeout=20, message="the plain Redis")
    yield port, client
    proc.kill()
    proc.wait(10)


def _answers(client) -> bool:
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def test_an_external_redis_without_users_works_with_a_plain_password(plain_redis, monkeypatch):
    port, _ = plain_redis
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}")
    monkeypatch.setenv("REDIS_PASSWORD", "plain-secret")
    reset_pools()
    try:
        job = jobs.submit("diagnostics.echo", {"external": True})
        assert job.status() == "queued"
        assert cache.get_or_compute("dataset", lambda: {"tokens": 3}, dataset_id="ext") == {"tokens": 3}
        assert events.publish(keys.training_channel("tr_ext"), "training.progress", {"step": 1, "total_steps": 2}).seq == 1
        assert lifecycle.redis_status()["user"] == "default"
        from mistudio.redis.connection import admin_client

        with pytest.raises(MistudioError, match="no admin access to an external Redis"):
            admin_client()
    finally:
        reset_pools()


def test_redis_acl_prints_the_app_user_for_an_external_redis(plain_redis, monkeypatch, tmp_path):
    port, default = plain_redis
    result = run_cli("redis-acl", env={"REDIS_PASSWORD": "device-secret", "MISTUDIO_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    line = [text for text in result.stdout.splitlines() if text.startswith("user ")][0]
    assert "device-secret" not in result.stdout
    assert "#" + hashlib.sha256(b"device-secret").hexdigest() in line
    default.execute_command("ACL", "SETUSER", *line.split()[1:])  # what the printed comment says to do
    monkeypatch.setenv("REDIS_URL", f"redis://{acl.APP_USER}@127.0.0.1:{port}")
    monkeypatch.setenv("REDIS_PASSWORD", "device-secret")
    reset_pools()
    try:
        assert jobs.submit("diagnostics.echo", {"as": "app user"}).status() == "queued"
        assert lifecycle.redis_status()["user"] == acl.APP_USER
        from mistudio.redis.connection import get_client

        with pytest.raises(redis.exceptions.NoPermissionError):
            get_client("queue").flushall()
    finally:
        reset_pools()
