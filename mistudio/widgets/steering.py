"""SteeringPanel: steer generation with SAE features, default and steered text side by side.

    panel = SteeringPanel("tr_abc123", features={123: 4.0}, prompt="The weather today is")
    panel                      # controls; Steer submits mistudio.steer(...) and streams the tokens
    FeatureBrowser(...)        # its "steer with this feature" button feeds a panel

Each feature is a row (index, strength slider, remove); a prompt box, method, max new tokens,
temperature, seed, and an optional sweep (strengths for the first feature, one steered row each).
Tokens arrive on the job's generation channel, read by an asyncio task on the kernel's loop (as
TrainingMonitor does: no thread touches a widget). Every steered token is shaded by its log-prob
minus the default's at the same position (same seed, so the rows differ only by the steering).
When the job ends the comparison is redrawn from the job's result (the authority; the stream is
only its live preview) and the comparison output becomes plain HTML, which a saved notebook keeps.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import math
import time

import ipywidgets as W
from IPython.display import display

from mistudio.errors import InvalidInput
from mistudio.events import Subscription
from mistudio.jobs import Job
from mistudio.queue.records import TERMINAL
from mistudio.views.display import html_bundle, widget_bundle
from mistudio.widgets.polling import keep_running

METHODS = ("additive", "clamp", "ablate")
UNITS = (("x max activation", "max_activation"), ("raw", "raw"))
SCALE = 4.0  # nats: a difference this large or larger gets the full colour
_TERMINAL_EVENTS = {"generation.completed": "succeeded", "generation.stopped": "cancelled",
                    "generation.error": "failed"}


def shade(diff: float | None) -> str:
    """The background of a token whose log-prob moved by diff nats (red: up, blue: down)."""
    if diff is None or not math.isfinite(diff):
        return "transparent"
    alpha = min(1.0, abs(diff) / SCALE) * 0.6
    return f"rgba(214,39,40,{alpha:.2f})" if diff > 0 else f"rgba(31,119,180,{alpha:.2f})"


def legend_html() -> str:
    stops = [-SCALE, -SCALE / 2, 0.0, SCALE / 2, SCALE]
    cells = "".join(f"<span style='background:{shade(d)};padding:0 6px'>{d:+g}</span>" for d in stops)
    return (f"<div style='font-size:12px;color:#555;margin:4px 0'>steered token's log-prob minus the default's at "
            f"the same position (nats): {cells} <span style='color:#999'>(|difference| &ge; {SCALE:g}: full colour; "
            f"hover a token for its numbers)</span></div>")


def tokens_html(tokens: list[str], logprobs: list[float], baseline: list[float] | None) -> str:
    """Tokens as escaped spans, shaded by logprob - baseline at the same position when given."""
    spans = []
    for i, (token, lp) in enumerate(zip(tokens, logprobs)):
        diff = lp - baseline[i] if baseline is not None and i < len(baseline) else None
        tip = f"{token!r} log-prob {lp:.3f}" + ("" if diff is None else f", difference {diff:+.3f}")
        spans.append(f"<span title='{html.escape(tip, quote=True)}' style='background:{shade(diff)}'>"
                     f"{html.escape(token)}</span>")
    return "".join(spans)


class Completion:
    """One generated row (a prompt's default, or one steered variant): tokens by position."""

    def __init__(self):
        self.tokens: dict[int, tuple[str, float]] = {}

    def add(self, position: int, token: str, logprob: float) -> None:
        self.tokens[position] = (token, logprob)  # a redelivered token replaces, never duplicates

    def lists(self) -> tuple[list[str], list[float]]:
        ordered = [self.tokens[p] for p in sorted(self.tokens)]
        return [t for t, _ in ordered], [lp for _, lp in ordered]

    @classmethod
    def of(cls, branch: dict) -> "Completion":
        row = cls()
        for i, (token, lp) in enumerate(zip(branch["tokens"], branch["logprobs"])):
            row.add(i, token, lp)
        return row


class SteeringPanel:
    def __init__(self, training_id: str, features=None, prompt: str = "", *, method: str = "additive",
                 strength_unit: str = "max_activation", max_new_tokens: int = 24, temperature: float = 1.0,
                 seed: int = 0, sweep: list[float] | None = None, n_features: int | None = None,
                 refresh_hz: float = 4.0):
        self.training_id = training_id
        self.n_features = n_features
        self.refresh_interval = 1.0 / refresh_hz
        self.job: Job | None = None
        self.request: dict | None = None  # what the last Steer sent
        self.prompts: list[str] = []
        self.labels: list[str] = []  # one per steered row
        self.rows: dict[tuple[int, str, int | None], Completion] = {}  # what is drawn
        self.streamed: dict[tuple[int, str, int | None], Completion] = {}  # what came on the channel
        self.state = "idle"
        self.error: str | None = None
        self.result: dict | None = None
        self.events_seen = 0
        self.done = False
        self._task: asyncio.Task | None = None
        self._outputs: list[tuple] = []  # (context, comparison handle) per display

        self.title = W.HTML(f"<b>Steering with the SAE of {html.escape(training_id)}</b>")
        self.feature_rows = W.VBox()
        self.add_button = W.Button(description="add feature", icon="plus", layout=W.Layout(width="auto"))
        self.add_button.on_click(lambda _: self.add_feature(0, 1.0))
        self.prompt = W.Textarea(value=prompt, placeholder="a prompt to complete", description="prompt",
                                 layout=W.Layout(width="95%", height="60px"))
        self.method = W.Dropdown(options=METHODS, value=method, description="method", layout=W.Layout(width="220px"))
        self.unit = W.Dropdown(options=UNITS, value=strength_unit, description="strength",
                               layout=W.Layout(width="260px"))
        wide = {"description_width": "initial"}  # "temperature" in full
        self.max_new_tokens = W.BoundedIntText(value=max_new_tokens, min=1, max=4096, description="new tokens",
                                               style=wide, layout=W.Layout(width="170px"))
        self.temperature = W.BoundedFloatText(value=temperature, min=0.0, max=10.0, step=0.1,
                                              description="temperature", style=wide, layout=W.Layout(width="170px"))
        self.seed = W.IntText(value=seed, description="seed", style=wide, layout=W.Layout(width="140px"))
        self.sweep = W.Text(value=", ".join(f"{s:g}" for s in sweep or []), description="sweep",
                            placeholder="e.g. 0, 2, 4, 8: strengths of the first feature, one row each",
                            layout=W.Layout(width="95%"))
        self.steer_button = W.Button(description="Steer", button_style="primary", icon="play")
        self.steer_button.on_click(lambda _: self.steer())
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True, layout=W.Layout(width="auto"))
        self.stop_button.on_click(lambda _: self.cancel())
        self.status = W.HTML()
        self.comparison = W.HTML()
        self.controls = W.VBox([self.title, self.feature_rows, self.add_button, self.prompt,
                                W.HBox([self.method, self.unit]),
                                W.HBox([self.max_new_tokens, self.temperature, self.seed]), self.sweep,
                                W.HBox([self.steer_button, self.stop_button, self.status])])
        self.widget = W.VBox([self.controls, self.comparison])
        self.set_features(features or {})

    # --- features -----------------------------------------------------------------------

    def add_feature(self, index: int, strength: float = 1.0) -> None:
        """Add a feature row (or, if the feature has one, set its strength)."""
        for row in self.feature_rows.children:
            if row.children[0].value == int(index):
                row.children[1].value = float(strength)
                return
        top = (self.n_features - 1) if self.n_features else 10**9
        index_box = W.BoundedIntText(value=int(index), min=0, max=top, description="feature",
                                     layout=W.Layout(width="170px"))
        slider = W.FloatSlider(value=float(strength), min=-20.0, max=20.0, step=0.25, description="strength",
                               continuous_update=False, layout=W.Layout(width="420px"))
        remove = W.Button(icon="trash", tooltip="remove this feature", layout=W.Layout(width="36px"))
        row = W.HBox([index_box, slider, remove])
        remove.on_click(lambda _: self._remove(row))
        self.feature_rows.children = (*self.feature_rows.children, row)

    def _remove(self, row) -> None:
        self.feature_rows.children = tuple(r for r in self.feature_rows.children if r is not row)

    def set_features(self, features) -> None:
        """Replace the rows: {index: strength} or [(index, strength)]."""
        self.feature_rows.children = ()
        items = features.items() if isinstance(features, dict) else features
        for index, strength in items:
            self.add_feature(index, strength)

    def features(self) -> list[dict]:
        return [{"index": int(r.children[0].value), "strength": float(r.children[1].value)}
                for r in self.feature_rows.children]

    def sweep_values(self) -> list[float] | None:
        text = self.sweep.value.strip()
        if not text:
            return None
        try:
            return [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise InvalidInput("sweep", f"{text!r} is not a list of numbers", "write strengths like 0, 2, 4, 8") from None

    # --- submitting -----------------------------------------------------------------------

    def steer(self) -> Job | None:
        """Submit mistudio.steer(...) with the controls' values and follow its stream. A refused
        request (InvalidInput, the rate limit) is shown in the panel, nothing queued."""
        import mistudio  # the package's API; imported here: mistudio imports this module's package

        try:
            request = {"prompts": [self.prompt.value], "features": self.features(), "method": self.method.value,
                       "strength_unit": self.unit.value, "max_new_tokens": int(self.max_new_tokens.value),
                       "temperature": float(self.temperature.value), "seed": int(self.seed.value),
                       "sweep": self.sweep_values()}
            job = mistudio.steer(self.training_id, **request)
        except Exception as exc:  # shown, not raised: a button callback has nowhere to raise to
            self.error = str(exc)
            self.state = "refused"
            self.status.value = f"<span style='color:#d62728'>{html.escape(self.error)}</span>"
            return None
        self.follow_job(job, request)
        return job

    def follow_job(self, job: Job | str, request: dict | None = None) -> asyncio.Task | None:
        """Show the stream of a steer job (one submitted here or elsewhere)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the previous job's listener: its events must not reach the new rows
        self._task = None
        self.job = job if isinstance(job, Job) else Job(str(job))
        self.request = request or dict((self.job.record().get("params") or {}))
        self._reset(self.request)
        self.refresh()
        self._show_live()
        task = self.start()
        if task is None and self._outputs:  # no running loop (a script): follow here
            self.follow()
        return task

    def _reset(self, request: dict) -> None:
        self.prompts = list(request.get("prompts") or [])
        features = request.get("features") or []
        if request.get("sweep"):
            first = features[0]["index"] if features else "?"
            self.labels = [f"#{first} at {s:g}" for s in request["sweep"]]
        elif request.get("method") == "ablate":
            self.labels = ["ablate " + ", ".join(f"#{f['index']}" for f in features)]
        else:
            self.labels = [", ".join(f"#{f['index']} at {f.get('strength', 0):g}" for f in features) or "steered"]
        self.rows = self.streamed = {}  # the same rows until the result replaces what is drawn
        self.result = None
        self.error = None
        self.events_seen = 0
        self.state = "queued"
        self.done = False

    # --- state ---------------------------------------------------------------------------

    def apply(self, event) -> None:
        """Fold one event of the generation channel into the state (no widget is touched)."""
        self.events_seen += 1
        value = event.payload
        if event.type == "generation.token":
            self.state = "running"
            self.add_token(value.prompt_index, value.branch, value.steered_index, value.position, value.token,
                           value.logprob)
        elif event.type in _TERMINAL_EVENTS:
            self.state = _TERMINAL_EVENTS[event.type]
            reason = getattr(value, "reason", None)  # generation.stopped: cancelled, or its time limit
            self.error = getattr(value, "error", None) or (reason if reason not in (None, "cancelled") else None)
            self.done = True

    def add_token(self, prompt_index: int, branch: str, steered_index: int | None, position: int, token: str,
                  logprob: float) -> None:
        key = (int(prompt_index), branch, None if branch == "default" else int(steered_index or 0))
        self.streamed.setdefault(key, Completion()).add(int(position), token, float(logprob))

    def load_result(self, result: dict) -> None:
        """The job's result replaces the streamed rows (the same tokens once the stream is whole)."""
        self.result = result
        self.rows = {}
        self.prompts = [p["prompt"] for p in result["prompts"]]
        for p, prompt in enumerate(result["prompts"]):
            self.rows[(p, "default", None)] = Completion.of(prompt["default"])
            for s, steered in enumerate(prompt["steered"]):
                self.rows[(p, "steered", s)] = Completion.of(steered)
            labels = [self._label(s) for s in prompt["steered"]]
            if any(labels):
                self.labels = [label or old for label, old in zip(labels, self.labels + [""] * len(labels))]

    @staticmethod
    def _label(steered: dict) -> str:
        if steered.get("strength") is not None and steered.get("features"):
            return f"#{steered['features'][0]['index']} at {steered['strength']:g}"
        return ""

    def text(self, prompt_index: int, branch: str, steered_index: int | None = None, *, streamed: bool = False) -> str:
        """A row's text as drawn (the result's, once the job has ended), or as it streamed."""
        rows = self.streamed if streamed else self.rows
        row = rows.get((prompt_index, branch, None if branch == "default" else steered_index))
        return "".join(row.lists()[0]) if row else ""

    # --- drawing -------------------------------------------------------------------------

    def comparison_html(self) -> str:
        """Default and steered text side by side, one row per steered completion (a sweep: per strength)."""
        cell = "padding:4px 8px;vertical-align:top;border-top:1px solid #ddd;white-space:pre-wrap;text-align:left"
        parts = [f"<div class='mistudio-steering' style='text-align:left'>{legend_html()}"]
        for p, prompt in enumerate(self.prompts):
            default = self.rows.get((p, "default", None), Completion())
            d_tokens, d_logprobs = default.lists()
            n = max(1, len(self.labels))
            parts.append(f"<div style='margin-top:6px'><b>prompt</b> <code style='white-space:pre-wrap'>"
                         f"{html.escape(prompt)}</code></div><table style='border-collapse:collapse;width:100%'>"
                         f"<tr><th style='{cell};width:14%'></th><th style='{cell};width:43%'>default</th>"
                         f"<th style='{cell};width:43%'>steered</th></tr>")
            for s in range(n):
                steered = self.rows.get((p, "steered", s), Completion())
                s_tokens, s_logprobs = steered.lists()
                label = self.labels[s] if s < len(self.labels) else f"steered {s}"
                default_cell = (f"<td rowspan='{n}' style='{cell}'>{tokens_html(d_tokens, d_logprobs, None)}</td>"
                                if s == 0 else "")
                parts.append(f"<tr class='steered-row'><td style='{cell};color:#555'>{html.escape(label)}</td>"
                             f"{default_cell}<td style='{cell}'>{tokens_html(s_tokens, s_logprobs, d_logprobs)}</td></tr>")
            parts.append("</table>")
        return "".join(parts) + "</div>"

    def status_text(self) -> str:
        if self.job is None:
            return "set features and a prompt, then Steer"
        n = sum(len(r.tokens) for r in self.rows.values())
        line = f"{self.job.id} · {self.state} · {n} tokens"
        return line + (f" · {self.error}" if self.error else "")

    def refresh(self) -> None:
        self.status.value = "&nbsp;" + html.escape(self.status_text())
        self.comparison.value = self.comparison_html() if self.prompts else ""
        self.steer_button.disabled = self.job is not None and not self.done
        self.stop_button.disabled = not self.steer_button.disabled

    def cancel(self) -> bool:
        """Stop the running steer job (its stream ends with generation.stopped)."""
        return self.job is not None and not self.done and self.job.cancel()

    def final_html(self) -> str:
        """The comparison once the job has ended: plain HTML, kept by a saved notebook."""
        return (f"<div style='text-align:left'><b>Steering</b> {html.escape(self.status_text())}</div>"
                + self.comparison_html())

    def _plain_text(self) -> str:
        lines = [f"Steering {self.job.id if self.job else ''}: {self.state}"]
        for p, prompt in enumerate(self.prompts):
            lines.append(f"prompt: {prompt!r}\n  default: {self.text(p, 'default')!r}")
            for s, label in enumerate(self.labels):
                lines.append(f"  {label}: {self.text(p, 'steered', s)!r}")
        return "\n".join(lines)

    def _show_live(self) -> None:
        for context, handle in self._outputs:
            context.run(handle.update, widget_bundle(self.comparison), raw=True)

    def finish(self) -> None:
        """Redraw from the job's result and make the comparison output plain HTML."""
        self.done = True
        self._fetch_result()  # listen() has fetched it off the loop already
        self.refresh()
        bundle = html_bundle(self.final_html(), self._plain_text())
        for context, handle in self._outputs:
            # in the displaying cell's context: JupyterLab applies an update only within its cell
            context.run(handle.update, bundle, raw=True)

    # --- listening -----------------------------------------------------------------------

    async def listen(self, timeout: float | None = None) -> None:
        """Follow the job's generation channel until it ends (or timeout seconds pass)."""
        channel = await asyncio.to_thread(self.job.channel)
        deadline = None if timeout is None else time.monotonic() + timeout
        last_check = last_refresh = 0.0
        async with Subscription(channel) as sub:
            while not self.done and (deadline is None or time.monotonic() < deadline):
                event = await sub.aget(timeout=self.refresh_interval)
                while event is not None and not self.done:  # drain, then draw once
                    self.apply(event)
                    event = None if self.done else await sub.aget(timeout=0)
                now = time.monotonic()
                if now - last_check > 2.0:  # a job can end without events (refused in the worker, crash)
                    last_check = now
                    record = await asyncio.to_thread(self.job.record)
                    if record["state"] in TERMINAL and not self.done:
                        for _ in range(3):  # in-flight events first, then the record's word
                            event = await sub.aget(timeout=0.3)
                            if event is not None:
                                self.apply(event)
                        if not self.done:
                            self.state, self.error, self.done = record["state"], record.get("error"), True
                if now - last_refresh >= self.refresh_interval:
                    self.refresh()
                    last_refresh = now
        if self.done:
            await asyncio.to_thread(self._fetch_result)
            self.finish()
        else:
            self.refresh()

    def _fetch_result(self) -> None:
        if self.job is not None and self.state == "succeeded" and self.result is None:
            try:
                self.load_result(self.job.result(timeout=30))
            except Exception as exc:  # the stream's rows stay; say why the result is missing
                self.error = f"result unavailable: {exc}"

    def start(self) -> asyncio.Task | None:
        if self.job is None or self.done:
            return None
        self._task = keep_running(self._task, self.listen)
        return self._task

    async def wait(self) -> str:
        """`await panel.wait()`: the job's final state once its stream has ended."""
        task = self.start()
        if task is not None:
            await asyncio.shield(task)
        return self.state

    def follow(self, timeout: float | None = None) -> "SteeringPanel":
        """Blocking: follow until the job ends (scripts and tests; notebooks use the button)."""
        asyncio.run(self.listen(timeout))
        return self

    def _ipython_display_(self) -> None:
        self.refresh()
        display(widget_bundle(self.controls), raw=True)
        comparison = html_bundle(self.final_html(), self._plain_text()) if self.done else widget_bundle(self.comparison)
        self._outputs.append((contextvars.copy_context(), display(comparison, raw=True, display_id=True)))
