"""Download models (and, through `download_repo`, datasets) from the Hugging Face hub.

Files are fetched one by one with `huggingface_hub.hf_hub_download` into a plain folder under
MISTUDIO_HOME, so progress can be reported as bytes and files and the folder can be loaded later
without a network. A `.mistudio-complete.json` marker, written last, says the folder is whole.

Without a network we fail at once with `HubUnavailable` (huggingface_hub would otherwise retry
for ~25 s) and say how to work offline.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from mistudio.errors import InvalidInput, MistudioError
from mistudio.settings import get_settings
from mistudio.validation import preview

Progress = Callable[[dict], None]
COMPLETE_MARKER = ".mistudio-complete.json"
# Top-level files a transformers model needs: config, tokenizer, weights. Skips ONNX/TF/Flax copies.
_MODEL_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".tiktoken")
# 'name' or 'org/name' (each part at most 96 characters, as on the hub); it names one folder (org--name).
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


class HubUnavailable(MistudioError, ConnectionError):
    """The Hugging Face hub cannot be reached (no network, or HF_HUB_OFFLINE is set)."""

    def __init__(self, repo_id: str, reason: str, offline_hint: str):
        self.repo_id = repo_id
        super().__init__(
            f"Cannot reach the Hugging Face hub to fetch {repo_id!r} ({reason}): there is no network. {offline_hint}"
        )


MODEL_OFFLINE_HINT = (
    "Use a local folder holding config.json and weights (load_model('/path/to/model')), "
    "or the bundled offline model (load_model() or load_model('minilm'))."
)


def is_repo_id(name: str) -> bool:
    return isinstance(name, str) and bool(_REPO_ID.fullmatch(name)) and ".." not in name


def repo_slug(repo_id: str) -> str:
    """A folder name for a hub id: 'org/name' -> 'org--name' (the hub cache's own convention)."""
    return repo_id.replace("/", "--")


def hub_status(repo_id: str = "openai-community/gpt2") -> tuple[bool, str]:
    """(reachable, why): whether the Hugging Face hub answers, for notebooks that need a network."""
    try:
        repo_files(repo_id, "model", None, MODEL_OFFLINE_HINT)
        return True, "the Hugging Face hub is reachable"
    except HubUnavailable as exc:
        return False, str(exc)
    except InvalidInput as exc:  # the hub answered, about this repo
        return True, str(exc)


def repo_files(repo_id: str, repo_type: str, revision: str | None, hint: str) -> tuple[str, dict[str, int]]:
    """(commit sha, {file name: size}) of a hub repository, with errors translated for the user."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    field = "model_id" if repo_type == "model" else "dataset_id"
    if not is_repo_id(repo_id):
        raise InvalidInput(
            field, f"{preview(repo_id)} is not a hub id", "use 'name' or 'org/name', e.g. 'openai-community/gpt2'"
        )
    if constants.HF_HUB_OFFLINE:
        raise HubUnavailable(repo_id, "HF_HUB_OFFLINE is set", hint)
    try:
        info = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True, timeout=10)
    except GatedRepoError:
        raise InvalidInput(
            field, f"{repo_id!r} is gated", "accept its licence on huggingface.co and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise InvalidInput(
            field, f"{repo_id!r} does not exist on the Hugging Face hub", "check the spelling, or use a local folder"
        ) from None
    except RevisionNotFoundError:
        raise InvalidInput(
            "revision", f"{revision!r} not found in {repo_id!r}", "use a branch, tag or commit"
        ) from None
    except HfHubHTTPError as exc:
        raise HubUnavailable(repo_id, f"hub error: {exc}", hint) from None
    except Exception as exc:  # DNS/connection/timeout errors of whichever HTTP client the hub library uses
        raise HubUnavailable(repo_id, f"{type(exc).__name__}: {exc}", hint) from None
    return info.sha, {s.rfilename: int(s.size or 0) for s in info.siblings or []}


def _byte_counter(report: Callable[[int], None]) -> type:
    """A silent tqdm class whose `update(n)` feeds our callback (hf_hub_download's tqdm_class hook)."""

    class _Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # some huggingface_hub versions pass it; vanilla tqdm rejects it
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            report(int(n or 0))

    return _Bar


def download_repo(
    repo_id: str,
    repo_type: str,
    local_dir: Path,
    select: Callable[[dict[str, int]], list[str]],
    progress: Progress | None = None,
    revision: str | None = None,
    offline_hint: str = MODEL_OFFLINE_HINT,
) -> Path:
    """Download the files `select` picks from a hub repo into `local_dir`, reporting progress."""
    from huggingface_hub import hf_hub_download

    sha, sizes = repo_files(repo_id, repo_type, revision, offline_hint)
    files = sorted(select(sizes))
    if not files:
        raise InvalidInput(
            "model_id" if repo_type == "model" else "dataset_id",
            f"{repo_id!r} has no files miStudio can use (found: {', '.join(sorted(sizes)[:10]) or 'none'})",
            "pick a repository with safetensors weights / parquet, jsonl or txt data",
        )
    total = sum(sizes[f] for f in files)
    state = {"done_bytes": 0, "file_bytes": 0, "file_size": 0, "last": 0.0}

    def emit(files_done: int, force: bool = False) -> None:
        now = time.monotonic()
        if progress is None or (not force and now - state["last"] < 0.5):  # at most 2 updates/s
            return
        state["last"] = now
        # hf_hub_download may count a resumed file's bytes twice or back off (negative n): clamp.
        in_flight = min(max(state["file_bytes"], 0), state["file_size"])
        progress(
            {
                "downloaded_bytes": state["done_bytes"] + in_flight,
                "total_bytes": total,
                "files_done": files_done,
                "files_total": len(files),
                "repo_id": repo_id,
            }
        )

    takes_tqdm = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    local_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(files):
        state["file_bytes"], state["file_size"] = 0, sizes[name]

        def on_bytes(n: int, i=i) -> None:
            state["file_bytes"] += n
            emit(i)

        extra = {"tqdm_class": _byte_counter(on_bytes)} if takes_tqdm else {}
        try:
            hf_hub_download(repo_id, name, repo_type=repo_type, revision=sha, local_dir=local_dir, **extra)
        except Exception as exc:
            raise HubUnavailable(
                repo_id, f"download of {name} failed: {type(exc).__name__}: {exc}", offline_hint
            ) from exc
        state["done_bytes"] += sizes[name]
        state["file_bytes"] = 0
        emit(i + 1, force=True)
    marker = {"repo_id": repo_id, "repo_type": repo_type, "revision": sha, "files": files, "total_bytes": total}
    (local_dir / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
    return local_dir


def select_model_files(sizes: dict[str, int]) -> list[str]:
    """Top-level config/tokenizer/weight files; PyTorch .bin weights only when no safetensors exist."""
    top = [f for f in sizes if "/" not in f]
    chosen = [f for f in top if f.endswith(_MODEL_SUFFIXES)]
    if not any(f.endswith(".safetensors") for f in chosen):
        chosen += [f for f in top if f.endswith(".bin")]
    return chosen


def model_dir(model_id: str) -> Path:
    """Where `download_model` puts a hub model."""
    return get_settings().models_dir / repo_slug(model_id)


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def download_model(
    model_id: str, progress: Progress | None = None, revision: str | None = None, force: bool = False
) -> Path:
    """Download a hub model into MISTUDIO_HOME/models/<org--name> and return the folder.

    An already complete download is returned without touching the network (unless `force`).
    """
    folder = model_dir(model_id)
    if is_complete(folder) and not force:
        return folder
    return download_repo(model_id, "model", folder, select_model_files, progress, revision)
