"""REST and WebSocket handlers under {base_url}mistudio/api/ (the contract: ARCHITECTURE.md).

Thin: each verb checks its input, then calls what miStudio already has (`mistudio.jobs`,
`mistudio.lifecycle.status` through payloads.py, `mistudio.events.history`) off the event
loop. Authentication, authorisation and XSRF are jupyter_server's: `@web.authenticated` and
`@authorized` (read or write on resource "mistudio") on every REST verb, `@ws_authenticated`
and a read check on the socket (403 without a user or the right), writes refused without the
XSRF token unless token-authenticated. Every authenticated request counts
against the API tier (ratelimit.py) and carries its X-RateLimit-* headers; refused: 429.
"""

from __future__ import annotations

import asyncio
import json

import redis
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web, websocket

from mistudio import events, jobs, limits
from mistudio.errors import InvalidInput, MistudioError
from mistudio.queue.records import STATES
from mistudio.redis.connection import RedisFull
from mistudio.validation import preview
from mistudio_lab import payloads
from mistudio_lab.channels import check_channel
from mistudio_lab.ratelimit import count_request, rate_subject

AUTH_RESOURCE = "mistudio"
MAX_LIMIT = 500  # jobs per list
FANOUT = "mistudio_fanout"  # web_app.settings key of the process's Fanout


class _Refused(Exception):
    """An answer other than 200, with the contract's error body."""

    def __init__(self, status: int, error: dict, headers: dict | None = None):
        self.status, self.error, self.headers = status, error, headers or {}


def _refusal(exc: BaseException) -> _Refused:
    if isinstance(exc, InvalidInput):
        return _Refused(400, {"field": exc.field, "problem": exc.problem, "fix": exc.fix})
    if isinstance(exc, jobs.JobNotFound):
        return _Refused(404, {"problem": str(exc)})
    if isinstance(exc, limits.RateLimited):  # a submit's own limits (the task's tier)
        return _Refused(429, {"problem": str(exc)}, exc.headers())
    if isinstance(exc, (RedisFull, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return _Refused(503, {"problem": str(exc)})
    if isinstance(exc, MistudioError):
        return _Refused(400, {"problem": str(exc)})
    raise exc


class ApiHandler(APIHandler):
    auth_resource = AUTH_RESOURCE
    _rate_headers: dict = {}

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # tornado's clear() (send_error, write_error) calls this again: the rate headers survive it
        for name, value in self._rate_headers.items():
            self.set_header(name, value)

    async def prepare(self) -> None:
        await super().prepare()
        if self.current_user is None:
            return  # the verb's @web.authenticated answers 403; nothing is counted
        try:
            decision = await count_request(rate_subject(self), self.settings)
        except Exception as exc:  # Redis away: the limit cannot be checked, nothing else can be done either
            self._answer(_refusal(exc))
            return
        if decision is None:
            return  # rate limits are off
        self._rate_headers = decision.headers()
        self.set_default_headers()
        if not decision.allowed:
            self._answer(_Refused(429, {"problem": f"rate limit: {decision.limit} requests per "
                                                   f"{decision.window:g} s ({decision.tier} tier); "
                                                   f"retry after {decision.headers()['Retry-After']} s"}))

    def _answer(self, refused: _Refused) -> None:
        for name, value in refused.headers.items():
            self.set_header(name, value)
        self.set_status(refused.status)
        self.finish({"error": refused.error})

    async def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) off the event loop; its deliberate errors become _Refused."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except Exception as exc:
            raise _refusal(exc) from None

    async def respond(self, make, status: int = 200) -> None:
        """Run make() (a coroutine function), answer its dict, or the contract's error."""
        try:
            body = await make()
        except _Refused as refused:
            self._answer(refused)
            return
        self.set_status(status)
        self.finish(json.dumps(body, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        """Errors we did not raise on purpose (500s, tornado's own): the contract's shape."""
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"problem": self._reason}}))

    def query_int(self, name: str, default: int, lo: int, hi: int) -> int:
        text = self.get_query_argument(name, None)
        if text in (None, ""):
            return default
        try:
            value = int(text)
        except ValueError:
            raise _refusal(InvalidInput(name, f"{preview(text)} is not an integer", f"pass {lo}..{hi}")) from None
        if not lo <= value <= hi:
            raise _refusal(InvalidInput(name, f"{value} is out of range", f"pass {lo}..{hi}"))
        return value

    def body_json(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise _Refused(400, {"field": "body", "problem": "is not JSON",
                                 "fix": 'send e.g. {"task": "train_sae", "params": {...}}'}) from None
        if not isinstance(body, dict):
            raise _Refused(400, {"field": "body", "problem": "is not a JSON object",
                                 "fix": 'send e.g. {"task": "train_sae", "params": {...}}'})
        return body


class OverviewHandler(ApiHandler):
    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def get(self):
        async def make():
            limit = self.query_int("limit", 50, 1, MAX_LIMIT)
            return await self.call(payloads.overview, jobs_limit=limit)
        await self.respond(make)


class PartHandler(ApiHandler):
    """GET workers, queues, alerts: a part of the overview."""

    def initialize(self, parts: tuple[str, ...]):
        self.parts = parts

    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def get(self):
        async def make():
            status = await self.call(payloads.overview, jobs_limit=None)
            return {name: status[name] for name in self.parts}
        await self.respond(make)


class JobsHandler(ApiHandler):
    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def get(self):
        async def make():
            state = self.get_query_argument("state", None) or None
            if state is not None and state not in STATES:
                raise _refusal(InvalidInput("state", f"unknown state {preview(state)}", f"use one of {', '.join(STATES)}"))
            task = self.get_query_argument("task", None) or None
            limit = self.query_int("limit", 50, 1, MAX_LIMIT)
            return {"jobs": await self.call(payloads.job_list, state=state, task=task, limit=limit)}
        await self.respond(make)

    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def post(self):
        async def make():
            body = self.body_json()
            unknown = sorted(set(body) - {"task", "params", "priority"})
            if unknown:
                raise _refusal(InvalidInput("body", f"unknown field(s) {', '.join(map(preview, unknown))}",
                                            "send only task, params and priority"))
            task, params = body.get("task"), body.get("params", {})
            if not isinstance(task, str) or not task:
                raise _refusal(InvalidInput("task", f"must be a task name, got {preview(task)}",
                                            "e.g. train_sae (`mistudio tasks` lists them)"))
            job = await self.call(jobs.submit, task, params, priority=body.get("priority"))
            return {"job": await self.call(payloads.one_job, job.id)}
        await self.respond(make, status=201)


class JobHandler(ApiHandler):
    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def get(self, job_id: str):
        async def make():
            return {"job": await self.call(payloads.one_job, job_id)}
        await self.respond(make)


class JobActionHandler(ApiHandler):
    """POST jobs/{id}/cancel or /retry: the job afterwards ("changed": False if there was nothing to cancel)."""

    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def post(self, job_id: str, action: str):
        async def make():
            handle = await self.call(jobs.get_job, job_id)
            changed = await self.call(handle.cancel if action == "cancel" else handle.retry)
            return {"job": await self.call(payloads.one_job, job_id), "changed": bool(changed)}
        await self.respond(make)


class JobEventsHandler(ApiHandler):
    @web.authenticated
    @authorized  # read (GET) or write (POST) on the resource "mistudio"
    async def get(self, job_id: str):
        async def make():
            after = self.query_int("after", 0, 0, 2**63)
            handle = await self.call(jobs.get_job, job_id)
            channel = await self.call(handle.channel)
            stored = [] if channel is None else await self.call(events.history, channel, after)
            return {"channel": channel, "events": [e.to_dict() for e in stored]}
        await self.respond(make)


class EventsSocket(WebSocketMixin, websocket.WebSocketHandler, JupyterHandler):
    """events?channel=training:ID&after=SEQ: history after SEQ, then live, one JSON event per
    message (the wire dict: seq, type, data, timestamp, channel); closed after a terminal event."""

    auth_resource = AUTH_RESOURCE
    listener = None

    @ws_authenticated
    async def get(self, *args, **kwargs):
        if not await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        try:
            self.channel = check_channel(self.get_query_argument("channel", ""))
            self.after = _seq(self.get_query_argument("after", "0"))
            decision = await count_request(rate_subject(self), self.settings)
        except Exception as exc:
            refused = _refusal(exc)
            self.set_status(refused.status)
            self.finish({"error": refused.error})
            return
        for name, value in (decision.headers() if decision else {}).items():
            self.set_header(name, value)
        if decision is not None and not decision.allowed:
            self.set_status(429)
            self.finish({"error": {"problem": f"rate limit: {decision.limit} per {decision.window:g} s"}})
            return
        await super().get(*args, **kwargs)

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)  # WebSocketMixin: pings
        self.listener = self.settings[FANOUT].join(self.channel, self.after, self._send, self._end)

    async def _send(self, text: str) -> None:
        await self.write_message(text)  # raises WebSocketClosedError once the browser left

    def _end(self) -> None:
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.close(1000, "end of the run")

    def on_message(self, message):
        pass  # the protocol is one-way: the browser only listens

    def on_close(self):
        if self.listener is not None and self.listener.task is not None:
            self.listener.task.cancel()
            self.settings[FANOUT].leave(self.listener)


def _seq(text: str) -> int:
    try:
        value = int(text or 0)
    except ValueError:
        raise InvalidInput("after", f"{preview(text)} is not a seq", "pass an integer >= 0 (0: the whole history)") from None
    if not 0 <= value < 2**64:
        raise InvalidInput("after", f"{value} is not a seq", "pass an integer >= 0 (0: the whole history)")
    return value


def routes(base_url: str) -> list[tuple]:
    api = url_path_join(base_url, "mistudio", "api")
    job = r"(?P<job_id>[^/]+)"
    return [
        (url_path_join(api, "overview"), OverviewHandler),
        (url_path_join(api, "workers"), PartHandler, {"parts": ("workers", "leader")}),
        (url_path_join(api, "queues"), PartHandler, {"parts": ("queues",)}),
        (url_path_join(api, "alerts"), PartHandler, {"parts": ("alerts",)}),
        (url_path_join(api, "jobs"), JobsHandler),
        (url_path_join(api, "jobs", job), JobHandler),
        (url_path_join(api, "jobs", job, r"(?P<action>cancel|retry)"), JobActionHandler),
        (url_path_join(api, "jobs", job, "events"), JobEventsHandler),
        (url_path_join(api, "events"), EventsSocket),
    ]
