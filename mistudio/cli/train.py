"""`mistudio train`: submit an SAE training job (defaults: the bundled model, the offline
corpus, a TopK SAE on the residual stream after the middle layer)."""

from __future__ import annotations

import itertools
import json
import typing
from pathlib import Path
from typing import Callable, Literal

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mistudio import jobs
from mistudio.cli.group import cli
from mistudio.cli.output import emit_json
from mistudio.cli.progress import follow
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.sae import registry
from mistudio.sae.config import TrainingConfig
from mistudio.sae.sweep import labels


def _read_config(path: str | None) -> dict:
    if path is None:
        return {}
    text = Path(path).read_text()
    if path.endswith(".toml"):
        try:
            import tomllib  # here: Python 3.10 has none, and only TOML configs need it
        except ImportError:  # Python 3.10
            raise InvalidInput("--config", "TOML needs Python 3.11+", "use a .json file") from None
        return tomllib.loads(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("--config", f"{path} is not valid JSON ({exc})", "write a JSON object of config fields") from None
    if not isinstance(data, dict):
        raise InvalidInput("--config", f"{path} holds a {type(data).__name__}", "write a JSON object of config fields")
    return data


def _sweep_members(specs: tuple[str, ...]) -> list[dict]:
    """--sweep k=32,64 --sweep expansion_factor=8,16: every combination, one member each (4 here)."""
    axes = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not values.strip():
            raise InvalidInput("--sweep", f"{spec!r} is not FIELD=V1,V2", "write e.g. --sweep k=32,64")
        if name == "layer":
            kind = click.INT
        elif name in TrainingConfig.model_fields and name != "sweep":
            kind = _click_type(name, TrainingConfig.model_fields[name].annotation)
            kind = click.BOOL if kind is bool else kind
        else:
            raise InvalidInput("--sweep", f"{name!r} is not a training config field",
                               "sweep a field `mistudio train --help` lists, e.g. k, expansion_factor, lr, layer")
        try:
            axes.append([(name, kind.convert(v.strip(), None, None)) for v in values.split(",")])
        except click.BadParameter as exc:
            raise InvalidInput(f"--sweep {name}", exc.format_message().rstrip("."), f"give {name} values separated by commas") from None
    return [dict(combo) for combo in itertools.product(*axes)]


def _field_help(name: str, info) -> Callable[[], str]:
    """The option's help: the field's description, which architectures read it, its default.

    Built when help is shown, not at import: an entry-point architecture's record is only
    loaded (with its module) then.
    """

    def text() -> str:
        if name == "architecture":
            docs = "; ".join(f"{a.name}: {a.doc}" for a in registry.architectures())
            return f"The SAE type; {docs}. [default: {info.default}]"
        parts = [info.description] if info.description else []
        users = [a for a in registry.architectures() if name in a.fields]
        if users and len(users) < len(registry.names()):
            parts.append(f"(for {', '.join(a.name for a in users)})")
        defaults = {_shown(a.defaults[name]) for a in users if a.defaults.get(name) is not None}
        if not defaults:
            defaults = {_shown(info.default_factory if info.default_factory is not None else info.default)}
        defaults -= {None}
        if defaults:
            parts.append(f"[default: {' / '.join(sorted(defaults))}]")
        return " ".join(parts)

    return text


def _shown(default) -> str | None:
    if callable(default):
        return "the machine profile's"
    if default is None or default is PydanticUndefined:
        return None
    return f"{default:g}" if isinstance(default, float) else str(default)


class _FieldOption(click.Option):
    """A click option whose help text is computed when help is shown."""

    def __init__(self, *args, help_text: Callable[[], str], **kw):
        super().__init__(*args, **kw)
        self._help_text = help_text

    def get_help_record(self, ctx):
        self.help = self._help_text()
        return super().get_help_record(ctx)


def _click_type(name: str, annotation):
    if name == "architecture":
        return click.Choice(registry.names())
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0] if len(args) == 1 else annotation
    if typing.get_origin(kind) is Literal:
        return click.Choice([str(v) for v in typing.get_args(kind)])
    return {int: click.INT, float: click.FLOAT, str: click.STRING, bool: bool}[kind]


def config_options(model: type[BaseModel], aliases: dict[str, tuple[str, ...]]):
    """One option per config field (--hook-point for hook_point), as sparsify's config is its CLI.

    Every option defaults to None, i.e. "not given": the config's own default applies, and a
    --config file's value is not overridden. Booleans are --name/--no-name.
    """

    def decorate(command):
        for name, info in reversed(model.model_fields.items()):
            flag = "--" + name.replace("_", "-")
            kind = _click_type(name, info.annotation)
            if kind is bool:
                decls, extra = [f"{flag}/--no-{flag[2:]}", name], {"default": None}
            else:
                decls, extra = [flag, *aliases.get(name, ()), name], {"type": kind}
            command = click.option(*decls, cls=_FieldOption, help_text=_field_help(name, info), **extra)(command)
        return command

    return decorate


@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A JSON (or TOML) file of training config fields; options below override it.")
@click.option("--layer", type=int, help="Train on the residual stream after this layer (default: the middle one).")
@config_options(TrainingConfig, aliases={"total_tokens": ("--tokens",)})
@click.option("--sweep", "sweep_specs", multiple=True, metavar="FIELD=V1,V2",
              help="Train one SAE per value on one activation pass (one job); several --sweep: every combination.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
@click.option("--wait", is_flag=True, help="Follow the training with a progress bar until it ends.")
def train(config_file, as_json, wait, sweep_specs, **options):
    """Submit an SAE training job and print its id (the training id)."""
    params = _read_config(config_file)
    params.update({k: v for k, v in options.items() if v is not None})
    if sweep_specs:
        params["sweep"] = _sweep_members(sweep_specs)
    job = jobs.submit("train_sae", params)
    record, params = job.record(), job.record()["params"]
    sweep = params.get("sweep")
    if not wait:
        if as_json:
            emit_json({"job_id": job.id, "training_id": job.id, "state": record["state"],
                       **({"sweep": sweep} if sweep else {"config": params})})
        else:
            click.echo(job.id)
        return
    if not as_json:
        click.echo(_intro(job.id, params))
    record = follow(job, keys.training_channel(job.id))
    result = (job.stored() or {}).get("result")
    if as_json:
        emit_json({"job_id": job.id, "training_id": job.id, "state": record["state"], "result": result,
                   "error": record.get("error")})
    elif record["state"] == "succeeded":
        click.echo(_sweep_done(result) if sweep else _done(result["final_metrics"], result["sae_path"]))
    else:
        raise click.ClickException(f"training {job.id} {record['state']}: {record.get('error')}")


def _intro(job_id: str, params: dict) -> str:
    if "sweep" not in params:
        return (f"training {job_id}: {params['architecture']} SAE, d_sae {params['d_sae']}, on {params['hook_point']}"
                f" of {params['model'] or 'all-MiniLM-L6-v2'}")
    members = params["sweep"]
    return "\n".join([f"sweep {job_id}: {len(members)} SAEs on one pass over {members[0]['model'] or 'all-MiniLM-L6-v2'}"]
                     + [f"  {job_id}-m{i}: {name}" for i, name in enumerate(labels(members))])


def _done(final: dict, sae_path: str | None, name: str = "done") -> str:
    causal = (f" CE-loss recovered {final['ce_loss_recovered']:.3f}, KL {final.get('kl_divergence', float('nan')):.4f};"
              if isinstance(final.get("ce_loss_recovered"), (int, float)) else "")  # causal LMs only
    return (f"{name}: explained variance {final.get('explained_variance', float('nan')):.3f},"
            f" L0 {final.get('l0', float('nan')):.1f}, dead {final.get('dead_fraction', float('nan')):.3f};"
            f"{causal} SAE at {sae_path}")


def _sweep_done(result: dict) -> str:
    shared = result["final_metrics"]
    return "\n".join([_done(m["final_metrics"], m["sae_path"], f"{m['training_id']} ({m['label']})")
                      for m in result["members"]]
                     + [f"{shared.get('tokens_per_s', float('nan')):,.0f} activation tokens/s for all members, "
                        f"peak RSS {shared.get('peak_rss_mb', float('nan')):,.0f} MiB"])
