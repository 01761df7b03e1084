"""Tokenize documents and pack them into fixed-length contexts.

Every context is framed the way its model was trained, and the framing tokens are masked out of
the activations (an SAE should learn the text, not the [CLS] or BOS outliers):

  BERT-style (has [CLS] and [SEP]):   [CLS] doc-a ... [SEP] doc-b ... [SEP]
  GPT-2 / Pythia / Llama (BOS, EOS):  BOS doc-a ... EOS doc-b ...

Documents flow into one token stream (separated by [SEP] or EOS) that is cut into contexts, so no
token is wasted on padding except in the last context. Three arrays come out, all [n, context_length]:
  input_ids        token ids (int32)
  attention_mask   1 for real tokens (special ones included), 0 for padding
  activation_mask  1 for the tokens whose activations count: real, not special
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mistudio.errors import InvalidInput

_TOKENIZE_BATCH = 64  # documents per tokenizer call: fast tokenizers parallelise within a call


@dataclass
class PackedTokens:
    input_ids: torch.Tensor  # int32 [n_contexts, context_length]
    attention_mask: torch.Tensor  # bool [n_contexts, context_length]
    activation_mask: torch.Tensor  # bool [n_contexts, context_length]

    @property
    def n_contexts(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def context_length(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_tokens(self) -> int:
        """Tokens whose activations count (one row each in an activation cache)."""
        return int(self.activation_mask.sum())


@dataclass(frozen=True)
class Framing:
    """How a tokenizer's model expects contexts framed."""

    prefix: tuple[int, ...]  # at the start of every context
    suffix: tuple[int, ...]  # at the end of every context
    separator: tuple[int, ...]  # between documents in the stream
    pad: int  # fills the last context; masked out everywhere


def framing_for(tokenizer: Any) -> Framing:
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    pad = pad if pad is not None else (eos if eos is not None else 0)
    if cls is not None and sep is not None:  # BERT family
        return Framing(prefix=(cls,), suffix=(sep,), separator=(sep,), pad=pad)
    separator = eos if eos is not None else bos
    return Framing(
        prefix=(bos,) if bos is not None else (),
        suffix=(),
        separator=(separator,) if separator is not None else (),
        pad=pad,
    )


def special_ids(tokenizer: Any) -> list[int]:
    """Ids masked out of activations: the tokenizer's special tokens, except [UNK] (it stands for real text)."""
    unk = tokenizer.unk_token_id
    return sorted(i for i in set(tokenizer.all_special_ids) if i is not None and i != unk)


def check_context_length(context_length: int, model_max: int | None, framing: Framing | None = None) -> None:
    if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 1:
        raise InvalidInput("context_length", f"must be a positive integer, got {context_length!r}", "use e.g. 128")
    if model_max is not None and context_length > model_max:
        raise InvalidInput(
            "context_length",
            f"{context_length} is longer than the model's maximum context of {model_max} tokens",
            f"use context_length <= {model_max}",
        )
    if framing is not None and context_length <= len(framing.prefix) + len(framing.suffix):
        raise InvalidInput(
            "context_length", f"{context_length} leaves no room for text after the special tokens", "use e.g. 128"
        )


def pack_documents(
    documents: Iterable[str],
    tokenizer: Any,
    context_length: int,
    max_tokens: int,
    progress: Callable[[dict], None] | None = None,
) -> tuple[PackedTokens, dict]:
    """Pack documents into at most max_tokens // context_length contexts. Returns (tokens, stats)."""
    framing = framing_for(tokenizer)
    check_context_length(context_length, None, framing)
    if max_tokens < context_length:
        raise InvalidInput(
            "max_tokens",
            f"{max_tokens} is less than one context of {context_length}",
            f"use max_tokens >= {context_length}",
        )
    max_contexts = max_tokens // context_length
    body = context_length - len(framing.prefix) - len(framing.suffix)
    contexts: list[list[int]] = []
    stream: list[int] = []
    doc_lengths: list[int] = []
    batch: list[str] = []
    last_report = 0.0
    exhausted = True

    def cut(final: bool) -> None:
        start = 0  # slice then delete once: deleting per context is quadratic for book-length documents
        while len(contexts) < max_contexts and (len(stream) - start >= body or (final and start < len(stream))):
            contexts.append([*framing.prefix, *stream[start : start + body], *framing.suffix])
            start += body
        del stream[:start]

    def add(docs: list[str]) -> None:
        nonlocal last_report
        for ids in tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]:
            if not ids:
                continue
            if doc_lengths:
                stream.extend(framing.separator)
            stream.extend(ids)
            doc_lengths.append(len(ids))
        cut(final=False)
        if progress and time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            progress(
                {
                    "stage": "tokenize",
                    "tokens_done": len(contexts) * context_length,
                    "tokens_total": max_contexts * context_length,
                    "documents": len(doc_lengths),
                }
            )

    for doc in documents:
        batch.append(doc)
        if len(batch) == _TOKENIZE_BATCH:
            add(batch)
            batch = []
            if len(contexts) >= max_contexts:
                exhausted = False
                break
    if batch:
        add(batch)
    cut(final=True)
    if not contexts:
        raise InvalidInput("source", "the corpus contains no text", "use a source with at least one non-empty document")
    truncated = not exhausted or bool(stream)

    ids = np.full((len(contexts), context_length), framing.pad, dtype=np.int32)
    attention = np.zeros((len(contexts), context_length), dtype=bool)
    for row, ctx in enumerate(contexts):
        ids[row, : len(ctx)] = ctx
        attention[row, : len(ctx)] = True
    activation = attention & ~np.isin(ids, special_ids(tokenizer))
    tokens = PackedTokens(torch.from_numpy(ids), torch.from_numpy(attention), torch.from_numpy(activation))
    stats = {
        "total_tokens": int(attention.sum()),  # real tokens, special ones included
        "content_tokens": int(activation.sum()),  # tokens whose activations count
        "padding_tokens": int((~attention).sum()),
        "vocab_size": int(len(tokenizer)),
        "unique_tokens": int(np.unique(ids[activation]).size),
        "samples": len(contexts),
        "context_length": context_length,
        "documents": len(doc_lengths),  # documents read (the last may be cut short)
        # Sequence lengths are per document, in tokens, before packing.
        "avg_seq_length": float(np.mean(doc_lengths)) if doc_lengths else 0.0,
        "min_seq_length": int(min(doc_lengths, default=0)),
        "max_seq_length": int(max(doc_lengths, default=0)),
        "truncated": truncated,  # the corpus had more text than max_tokens
    }
    if progress:
        progress(
            {
                "stage": "tokenize",
                "tokens_done": len(contexts) * context_length,
                "tokens_total": max_contexts * context_length,
                "documents": len(doc_lengths),
            }
        )
    return tokens, stats
