"""The REST half of the JupyterLab server extension, against a real Redis and real workers:
the sidebar's overview, jobs (list, get, submit with the Python API's validation, cancel,
retry, events), the API tier's headers and 429, and jupyter_server's auth and XSRF."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from mistudio import jobs, limits

API = ("mistudio", "api")


async def _get(jp_fetch, *path, **params):
    response = await jp_fetch(*API, *path, params=params or None)
    return json.loads(response.body)


async def _post(jp_fetch, *path, body=None, raise_error=True, **kwargs):
    return await jp_fetch(*API, *path, method="POST", body=json.dumps(body if body is not None else {}),
                          raise_error=raise_error, **kwargs)


async def _until(fn, what: str, timeout: float = 30.0):
    """Await fn() until it returns something truthy (the server shares this loop: never block it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await fn()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


async def test_overview_shows_a_submitted_job_running_on_a_real_worker(jp_fetch, workers, fanout):
    worker = await asyncio.to_thread(workers.start, "cpu")
    created = await _post(jp_fetch, "jobs", body={"task": "diagnostics.sleep", "params": {"seconds": 30}})
    assert created.code == 201
    job = json.loads(created.body)["job"]
    assert job["task"] == "diagnostics.sleep" and job["state"] in ("queued", "running")

    async def running():
        view = await _get(jp_fetch, "overview")
        mine = [j for j in view["jobs"] if j["id"] == job["id"]]
        # its assignment comes within a keeper visit of "running"; the leader within an election
        busy = [w for w in view["workers"] if job["id"] in w["jobs"]]
        return view if (mine and mine[0]["state"] == "running" and mine[0]["progress"] is not None and busy
                        and view["leader"]) else None

    view = await _until(running, "the job running with progress, its worker busy, in the overview")
    shown = next(j for j in view["jobs"] if j["id"] == job["id"])
    assert shown["attempts"] == 1 and str(worker.pid) in shown["worker"] and shown["device"]
    assert 0 <= shown["progress"] <= 1 and shown["created_at"] <= shown["updated_at"] <= time.time()
    assert shown["channel"] is None  # diagnostics publish no events
    me = [w for w in view["workers"] if w["id"] == shown["worker"]]
    assert me and me[0]["busy"] and me[0]["queues"] == ["cpu"] and 0 <= me[0]["heartbeat_age_s"] < 30
    assert view["leader"] is not None and view["leader"]["node"]
    assert {q["name"] for q in view["queues"]} >= {"cpu", "gpu", "io"}
    assert isinstance(view["alerts"], list)
    # the parts of the overview on their own
    assert (await _get(jp_fetch, "workers"))["workers"][0]["id"] == me[0]["id"]
    assert "queues" in await _get(jp_fetch, "queues") and "alerts" in await _get(jp_fetch, "alerts")

    cancelled = json.loads((await _post(jp_fetch, "jobs", job["id"], "cancel")).body)
    assert cancelled["changed"] is True

    async def ended():
        one = (await _get(jp_fetch, "jobs", job["id"]))["job"]
        return one if one["state"] == "cancelled" else None

    await _until(ended, "the cancelled job's record")
    assert jobs.get_job(job["id"]).status() == "cancelled"  # the Python API sees the same record


async def test_retry_runs_a_cancelled_job_again_and_filters_select_it(jp_fetch, workers, fanout):
    await asyncio.to_thread(workers.start, "cpu")
    job = jobs.submit("diagnostics.sleep", {"seconds": 30})  # from Python, as a terminal would
    await _post(jp_fetch, "jobs", job.id, "cancel")

    async def cancelled():
        return (await _get(jp_fetch, "jobs", state="cancelled", task="diagnostics.sleep"))["jobs"]

    assert [j["id"] for j in await _until(cancelled, "the cancelled job listed")] == [job.id]
    assert (await _get(jp_fetch, "jobs", state="succeeded"))["jobs"] == []

    retried = json.loads((await _post(jp_fetch, "jobs", job.id, "retry")).body)["job"]
    assert retried["state"] in ("queued", "running")

    async def running_again():
        one = (await _get(jp_fetch, "jobs", job.id))["job"]
        return one if one["state"] == "running" else None

    again = await _until(running_again, "the retried job running")
    assert again["attempts"] >= 1
    await _post(jp_fetch, "jobs", job.id, "cancel")


async def test_a_submit_is_checked_as_the_python_api_checks_it(jp_fetch, redis_db, fanout):
    bad = {"task": "diagnostics.sleep", "params": {"seconds": "soon"}}
    with pytest.raises(Exception) as python_error:
        jobs.submit(bad["task"], bad["params"])
    response = await _post(jp_fetch, "jobs", body=bad, raise_error=False)
    assert response.code == 400
    error = json.loads(response.body)["error"]
    assert (error["field"], error["problem"], error["fix"]) == (
        python_error.value.field, python_error.value.problem, python_error.value.fix)

    unknown = await _post(jp_fetch, "jobs", body={"task": "no_such_task"}, raise_error=False)
    assert unknown.code == 400 and json.loads(unknown.body)["error"]["field"] == "task"
    not_json = await jp_fetch(*API, "jobs", method="POST", body="{", raise_error=False)
    assert not_json.code == 400 and json.loads(not_json.body)["error"]["field"] == "body"
    assert (await _get(jp_fetch, "jobs"))["jobs"] == []  # nothing was queued

    missing = await jp_fetch(*API, "jobs", "tr_nope", raise_error=False)
    assert missing.code == 404 and "no job" in json.loads(missing.body)["error"]["problem"]
    bad_state = await jp_fetch(*API, "jobs", params={"state": "sleeping"}, raise_error=False)
    assert bad_state.code == 400 and json.loads(bad_state.body)["error"]["field"] == "state"
    bad_limit = await jp_fetch(*API, "jobs", params={"limit": "lots"}, raise_error=False)
    assert bad_limit.code == 400 and json.loads(bad_limit.body)["error"]["field"] == "limit"


async def test_a_jobs_event_history_over_rest(jp_fetch, redis_db, fanout):
    from mistudio import events

    job = jobs.submit("train_sae", {"steps": 10})  # queued, no worker: only its record and channel
    channel = jobs.get_job(job.id).channel()
    for step in range(3):
        events.publish(channel, events.TrainingProgress(step=step, total_steps=10))
    got = await _get(jp_fetch, "jobs", job.id, "events", after="1")
    assert got["channel"] == channel == f"training:{job.id}"
    assert [e["seq"] for e in got["events"]] == [2, 3] and got["events"][0]["type"] == "training.progress"
    assert (await _get(jp_fetch, "jobs", job.id))["job"]["channel"] == channel


@pytest.mark.parametrize("lab_rate_limits", [None])
async def test_the_production_api_tier_is_what_the_handlers_count(jp_fetch, jp_serverapp, redis_db, fanout):
    from mistudio_lab.ratelimit import SETTING

    assert jp_serverapp.web_app.settings[SETTING] == limits.tier_windows("api")
    assert [(w.limit, w.seconds) for w in limits.tier_windows("api")] == [(100, 60.0), (10, 1.0)]
    response = await jp_fetch(*API, "queues")
    # the tightest window after one request: the burst's 10, 9 left
    assert response.headers["X-RateLimit-Limit"] == "10" and response.headers["X-RateLimit-Remaining"] == "9"
    assert int(response.headers["X-RateLimit-Reset"]) >= time.time()


@pytest.mark.parametrize("lab_rate_limits", [["100/minute", "10/minute"]])  # the burst's 10, over a minute
async def test_the_eleventh_request_of_a_burst_is_refused_with_every_header(jp_fetch, redis_db, fanout):
    remaining = []
    for i in range(10):
        if i == 8:  # tornado's own error (send_error clears the headers; they are set again)
            response = await jp_fetch(*API, "jobs", method="DELETE", raise_error=False)
        else:  # and an error of ours
            response = await jp_fetch(*API, "jobs", "tr_missing" if i == 9 else "", raise_error=False)
        assert response.code == {8: 405, 9: 404}.get(i, 200)
        assert response.headers["X-RateLimit-Limit"] == "10"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == list(range(9, -1, -1))

    refused = await jp_fetch(*API, "overview", raise_error=False)
    assert refused.code == 429
    assert refused.headers["X-RateLimit-Limit"] == "10" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert int(refused.headers["X-RateLimit-Reset"]) >= time.time()
    assert "rate limit" in json.loads(refused.body)["error"]["problem"]
    posted = await _post(jp_fetch, "jobs", body={"task": "diagnostics.echo"}, raise_error=False)
    assert posted.code == 429 and jobs.list_jobs() == []  # refused before anything is queued


@pytest.mark.parametrize("lab_rate_limits", [["1/minute"]])
async def test_rate_limits_off_counts_nothing(jp_fetch, redis_db, fanout, monkeypatch):
    monkeypatch.setenv("MISTUDIO_RATE_LIMITS", "off")  # as for submits: benchmarks, bulk scripts
    for _ in range(3):
        response = await jp_fetch(*API, "queues")
        assert response.code == 200 and "X-RateLimit-Limit" not in response.headers


async def test_unauthenticated_requests_and_sockets_are_refused(jp_fetch, jp_ws_fetch, redis_db, fanout):
    for path in (("overview",), ("jobs",), ("jobs", "tr_x")):
        response = await jp_fetch(*API, *path, headers={"Authorization": ""}, raise_error=False)
        assert response.code == 403, path
    posted = await _post(jp_fetch, "jobs", body={"task": "diagnostics.echo"}, headers={"Authorization": ""},
                         raise_error=False)
    assert posted.code == 403 and jobs.list_jobs() == []
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch(*API, "events", params={"channel": "training:tr_x"}, headers={"Authorization": ""})
    assert refused.value.code == 403
    assert fanout.channels == []


class ReadOnly(Authorizer):
    """An authorizer (a JupyterHub role, say) that lets users read miStudio but change nothing."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "mistudio" or action == "read"


@pytest.mark.parametrize("lab_authorizer", [ReadOnly])
async def test_the_servers_authorizer_decides_who_may_write(jp_fetch, jp_ws_fetch, redis_db, fanout):
    assert (await jp_fetch(*API, "overview")).code == 200
    posted = await _post(jp_fetch, "jobs", body={"task": "diagnostics.echo"}, raise_error=False)
    assert posted.code == 403 and jobs.list_jobs() == []
    job = jobs.submit("diagnostics.echo", {})
    assert (await _post(jp_fetch, "jobs", job.id, "cancel", raise_error=False)).code == 403
    assert jobs.get_job(job.id).status() == "queued"
    ws = await jp_ws_fetch(*API, "events", params={"channel": "training:tr_x"})  # reading is allowed
    ws.close()


async def test_a_cookie_authenticated_write_needs_the_xsrf_token(jp_fetch, redis_db, fanout):
    login = await jp_fetch(*API, "queues")  # token-authenticated: the server sets its login cookie
    cookies = [c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie")]
    assert any(c.startswith("username-") for c in cookies), cookies
    with_cookie = {"Authorization": "", "Cookie": "; ".join(cookies)}
    assert (await jp_fetch(*API, "queues", headers=with_cookie)).code == 200  # the cookie authenticates reads

    body = {"task": "diagnostics.echo", "params": {"x": 1}}
    refused = await _post(jp_fetch, "jobs", body=body, headers=dict(with_cookie), raise_error=False)
    assert refused.code == 403 and jobs.list_jobs() == []

    xsrf = "0123456789abcdef"  # the double-submit check: the cookie and the header must agree
    with_xsrf = {"Authorization": "", "Cookie": "; ".join(cookies + [f"_xsrf={xsrf}"]), "X-XSRFToken": xsrf}
    accepted = await _post(jp_fetch, "jobs", body=body, headers=with_xsrf, raise_error=False)
    assert accepted.code == 201, accepted.body
