"""SystemView: workers with heartbeat age, queue depths, Redis memory, recent alerts."""

from __future__ import annotations

import html
import time

import ipywidgets as W

from mistudio import events, lifecycle
from mistudio.redis import keys
from mistudio.widgets.polling import PollingView


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<i>none</i>"
    head = "".join(f"<th style='text-align:left;padding-right:1em'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding-right:1em'>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class SystemView(PollingView):
    interval = 2.0

    def __init__(self, alerts: int = 10):
        super().__init__()
        self.alerts = alerts
        self.data: dict = {}
        self.html = W.HTML()
        self.widget = W.VBox([W.HTML("<b>System</b>"), self.html])

    def fetch(self) -> dict:
        status = lifecycle.status()
        recent = events.history(keys.SYSTEM_ALERTS_CHANNEL)[-self.alerts:]
        status["recent_alerts"] = [{**e.data, "time": e.timestamp} for e in reversed(recent)]
        return status

    def draw(self, status: dict) -> None:
        self.data = status
        r = status["redis"]
        used = r["used_memory"] / 2**20
        limit = f"{r['maxmemory'] / 2**20:.0f} MiB" if r["maxmemory"] else "no limit"
        workers = [{"worker": w["worker_id"], "status": w.get("status"), "queue": w.get("queue"),
                    "heartbeat age": f"{w['age']:.0f}s", "jobs": ", ".join(w.get("active_jobs") or []) or "-"}
                   for w in status["workers"]]
        queues = [{"queue": q, **{k: v for k, v in c.items() if k in ("queued", "in_flight", "dead", "scheduled")}}
                  for q, c in status["queues"].items()]
        alerts = [{"level": a.get("level"), "message": a.get("message"),
                   "age": f"{time.time() - a['time']:.0f}s"} for a in status["recent_alerts"]]
        self.html.value = (
            f"<p>Redis {html.escape(str(r['version']))} at {html.escape(r['address'])}: "
            f"{used:.1f} MiB used of {limit}, {r['connected_clients']} clients</p>"
            f"<b>Workers</b>{_table(workers, ['worker', 'status', 'queue', 'heartbeat age', 'jobs'])}"
            f"<b>Queues</b>{_table(queues, ['queue', 'queued', 'in_flight', 'dead', 'scheduled'])}"
            f"<b>Recent alerts</b>{_table(alerts, ['level', 'message', 'age'])}"
        )
