"""`mistudio steer TRAINING_ID --feature 123:4.0 --prompt "..."`: default and steered completions,
streamed side by side (one line per generated position), then the whole texts."""

from __future__ import annotations

import shutil
import textwrap
import time

import click

from mistudio import events
from mistudio.cli.group import cli
from mistudio.cli.output import clean, emit_json
from mistudio.errors import InvalidInput
from mistudio.events import GenerationToken
from mistudio.generation import steer as submit
from mistudio.queue.records import TERMINAL


def parse_feature(text: str) -> dict:
    """'123:4.0' -> {"index": 123, "strength": 4.0}; '123' (for ablate) -> {"index": 123}."""
    index, sep, strength = text.partition(":")
    try:
        feature = {"index": int(index)}
        if sep:
            feature["strength"] = float(strength)
    except ValueError:
        raise InvalidInput("--feature", f"{text!r} is not INDEX:STRENGTH", "write e.g. --feature 123:4.0") from None
    return feature


def parse_sweep(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InvalidInput("--sweep", f"{text!r} is not a list of numbers", "write e.g. --sweep 0,2,4,8") from None


class SideBySide:
    """Prints generation.token events as rows: position, then each branch's token and log-prob."""

    def __init__(self, columns: list[str], width: int):
        self.columns = columns
        self.cell = max(12, (width - 6) // len(columns) - 2)
        self.row: dict[int, tuple[str, float]] = {}
        self.key: tuple[int, int] | None = None  # (prompt_index, position) of the row being filled

    def header(self, prompt_index: int, prompt: str) -> None:
        click.echo(f"\nprompt {prompt_index}: {clean(prompt, 200)}")
        click.echo(("  pos " + "".join(c[: self.cell].ljust(self.cell + 2) for c in self.columns)).rstrip())

    def add(self, token: GenerationToken, prompts: list[str]) -> None:
        key = (token.prompt_index, token.position)
        if key != self.key:
            self.flush()
            if self.key is None or key[0] != self.key[0]:
                self.header(key[0], prompts[key[0]])
            self.key = key
        column = 0 if token.branch == "default" else 1 + (token.steered_index or 0)
        self.row[column] = (token.token, token.logprob)

    def flush(self) -> None:
        if not self.row or self.key is None:
            return
        cells = []
        for column in range(len(self.columns)):
            token, logprob = self.row.get(column, ("", None))
            shown = clean(repr(token)[1:-1], self.cell - 8)  # escaped: spaces and newlines stay visible
            cells.append(f"{shown} {logprob:6.2f}" if logprob is not None else "")
        click.echo((f"{self.key[1]:5d} " + "".join(c.ljust(self.cell + 2) for c in cells)).rstrip())
        self.row = {}


def print_texts(result: dict, width: int) -> None:
    for p, entry in enumerate(result["prompts"]):
        branches = [("default", entry["default"])] + [(steered_label(s), s) for s in entry["steered"]]
        cell = max(20, (width - 2) // len(branches) - 2)
        wrapped = [textwrap.wrap(clean(entry["prompt"] + b["text"], None), cell) or [""] for _, b in branches]
        click.echo(f"\n== prompt {p} ==")
        click.echo("".join(label[:cell].ljust(cell + 2) for label, _ in branches).rstrip())
        for line in range(max(len(w) for w in wrapped)):
            click.echo("".join((w[line] if line < len(w) else "").ljust(cell + 2) for w in wrapped).rstrip())
        for label, b in branches:
            lp = [x for x in b["logprobs"] if x is not None]
            mean = f"{sum(lp) / len(lp):.3f}" if lp else "-"
            click.echo(f"  {label}: {len(b['token_ids'])} tokens, mean log-prob {mean}")


def steered_label(steered: dict) -> str:
    return "steered " + ", ".join(f"{f['index']}:{f['strength']:g}" for f in steered["features"])


@cli.command()
@click.argument("training_id")
@click.option("--prompt", "prompts", multiple=True, required=True, help="Text to continue (repeat for several).")
@click.option("--feature", "features", multiple=True, required=True,
              help="INDEX:STRENGTH, e.g. 123:4.0 (repeat for several; ablate takes INDEX alone).")
@click.option("--method", type=click.Choice(["additive", "clamp", "ablate"]), default="additive", show_default=True)
@click.option("--unit", "strength_unit", type=click.Choice(["max_activation", "raw"]), default="max_activation",
              show_default=True, help="Strengths in units of the feature's max activation, or raw.")
@click.option("--positions", default="all", show_default=True, help="'all', or the first token index steered.")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="The same for default and steered.")
@click.option("--sweep", help="Strengths for the first feature, one completion each, e.g. 0,2,4,8.")
@click.option("--json", "as_json", is_flag=True, help="Print the job's result as one JSON object (no stream).")
def steer(training_id, prompts, features, method, strength_unit, positions, max_new_tokens, temperature, top_p,
          seed, sweep, as_json):
    """Generate default and feature-steered completions side by side, streaming."""
    if positions != "all":
        try:
            positions = int(positions)
        except ValueError:
            raise InvalidInput("--positions", f"{positions!r} is neither 'all' nor a token index",
                               "write --positions all or e.g. --positions 3") from None
    job = submit(training_id, prompts=list(prompts), features=[parse_feature(f) for f in features], method=method,
                 strength_unit=strength_unit, positions=positions, max_new_tokens=max_new_tokens,
                 temperature=temperature, top_p=top_p, seed=seed, sweep=parse_sweep(sweep))
    if as_json:
        emit_json({"job_id": job.id, "result": job.result()})
        return
    width = shutil.get_terminal_size((120, 24)).columns
    request = job.record()["params"]
    n_steered = len(request["sweep"] or [None])
    columns = ["default"] + ([f"strength {s:g}" for s in request["sweep"]] if request["sweep"] else ["steered"])
    click.echo(f"{job.id}: steering {training_id} ({method}); waiting for the GPU...", err=True)
    view = SideBySide(columns[: 1 + n_steered], width)
    with events.Subscription(job.channel()) as sub:
        checked = time.monotonic()
        while True:
            event = sub.get(timeout=0.5)
            if event is not None and event.type == "generation.token":
                view.add(event.payload, request["prompts"])
            elif event is not None and event.terminal:
                break
            if time.monotonic() - checked > 2.0:  # a job that ended without its terminal event (never hangs)
                checked = time.monotonic()
                if job.record()["state"] in TERMINAL:
                    break
    view.flush()
    result = job.result()
    print_texts(result, width)
    if result.get("stopped"):
        click.echo("(stopped before the end)")
