"""The queue's picture (the key table and the transition table atop mistudio/queue/storage.py) is the
truth: every key it names is a function of mistudio/redis/keys.py, every queue key there is in it,
every script it names exists and touches only pictured keys, and a real Redis, driven through
every transition, holds no key the picture does not name."""

from __future__ import annotations

import ast
import inspect
import json
import re

from helpers import wait_for
from mistudio.queue import storage as storage_module
from mistudio.queue.apps import huey_app
from mistudio.redis import keys
from mistudio.redis.scripts import LUA_DIR

PICTURE = storage_module.__doc__
KEY_ROW = re.compile(r"^    (\w+)\((Q?)\)\s+(ZSET|HASH|LIST|STRING)\s+(.*)$", re.M)
SCRIPT_ROW = re.compile(r"^    (\w+)\s+(queue_\w+)\.lua\s", re.M)


def pictured_keys() -> dict[str, str]:
    """keys.py function name -> what the picture says it holds."""
    return {name: holds for name, _q, _type, holds in KEY_ROW.findall(PICTURE)}


def keys_functions() -> set[str]:
    return {name for name, fn in inspect.getmembers(keys, inspect.isfunction) if fn.__module__ == keys.__name__}


def test_every_key_in_the_picture_is_named_as_keys_py_names_it_and_every_queue_key_is_pictured():
    pictured = set(pictured_keys())
    assert len(pictured) >= 9, PICTURE
    assert pictured <= keys_functions(), f"not in redis/keys.py: {sorted(pictured - keys_functions())}"
    queue_keys = {name for name in keys_functions() if name.startswith("queue_")}
    assert queue_keys <= pictured, f"queue keys missing from the picture: {sorted(queue_keys - pictured)}"


def test_the_storage_uses_exactly_the_pictured_keys():
    tree = ast.parse(inspect.getsource(storage_module))
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "keys"}
    assert used == set(pictured_keys()), f"used, not pictured: {used - set(pictured_keys())}; " \
                                         f"pictured, not used: {set(pictured_keys()) - used}"


def test_every_transition_names_its_script_and_each_script_touches_only_pictured_keys():
    named = dict(SCRIPT_ROW.findall(PICTURE))
    on_disk = {path.stem for path in LUA_DIR.glob("queue_*.lua")}
    assert set(named.values()) == on_disk, (named, on_disk)
    for transition, script in named.items():
        assert re.search(rf"─{transition}─|{transition}[,)]|, {transition}\b", PICTURE), f"{transition} not drawn"
        header = (LUA_DIR / f"{script}.lua").read_text()
        touched = set(re.findall(r"^-- KEYS\[\d+\].*\(keys\.(\w+)\)", header, re.M))
        assert touched and touched <= set(pictured_keys()), (script, touched - set(pictured_keys()))
        assert len(touched) == len(re.findall(r"^-- KEYS\[\d+\]", header, re.M)), f"{script}: a KEYS line names no key"


def _fields(text: str) -> set[str]:
    return set(re.findall(r"\w+", text))


def test_the_lease_info_fields_described_are_those_the_claim_script_writes():
    claim = (LUA_DIR / "queue_claim.lua").read_text()
    written = set(re.findall(r"(\w+) = ", re.search(r"cjson\.encode\(\{(.*?)\}\)", claim, re.S).group(1)))
    assert written == {"job_id", "counter", "worker", "score", "claimed"}
    in_picture = _fields(re.search(r"JSON \{(.*?)\}", pictured_keys()["queue_lease_info"]).group(1))
    in_keys_py = _fields(re.search(r"JSON \{(.*?)\}", keys.queue_lease_info.__doc__).group(1))
    assert in_picture == written and in_keys_py == written


def test_a_real_redis_driven_through_every_transition_holds_only_pictured_keys(redis_db, redis_admin):
    queue = "cpu"
    storage = huey_app(queue).storage
    client = redis_admin("queue")  # KEYS is the admin's (the app user never lists keys)
    expected = {getattr(keys, name)(queue) if "Q" in row else getattr(keys, name)()
                for name, row in ((n, q) for n, q, _t, _h in KEY_ROW.findall(PICTURE))}
    seen: set[str] = set()

    def look() -> None:
        seen.update(k.decode() if isinstance(k, bytes) else k for k in client.keys("*"))

    message = lambda job_id: json.dumps({"id": job_id, "name": "diagnostics.echo"}).encode()  # noqa: E731
    for job_id in ("diag_p1", "diag_p2", "diag_p3"):
        storage.enqueue(message(job_id), 1)
    look()
    first = storage.claim("w1", block=False)
    look()
    assert storage.renew(first) and storage.ack(first)
    second = storage.claim("w1", block=False)
    look()
    assert storage.release(second)
    again = storage.claim("w1", block=False)
    assert storage.bury(again, "test: buried")
    look()
    assert storage.requeue_dead(again.job_id, 1)
    lease_seconds, storage.lease_seconds = storage.lease_seconds, 0.2
    try:  # a lease that lapses, for the reaper
        lapsed = storage.claim("w1", block=False)
        look()
        reaped = wait_for(lambda: storage.reap(max_attempts=5), timeout=10, message="the lapsed lease reaped")
        assert [(r.lease_id, r.outcome) for r in reaped] == [(lapsed.id, "requeued")]
    finally:
        storage.lease_seconds = lease_seconds
    storage.enqueue(b"not json", 0)
    while (lease := storage.claim("w1", block=False)) is not None:
        look()
        storage.bury(lease, "test: drained")
    look()
    assert seen, "nothing was written"
    assert seen <= expected, f"keys the picture does not name: {sorted(seen - expected)}"
    assert storage.counts()["dead"] == 3 and storage.counts()["queued"] == 0
