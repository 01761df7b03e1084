"""Token ids to the text a reader expects to see: ' the' for GPT-2's 'Ġthe', 'ing' (glued to the
previous piece) for WordPiece's '##ing', ' word' for other WordPiece tokens."""

from __future__ import annotations


def _is_wordpiece(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordPiece"


def token_texts(tokenizer, ids) -> dict[int, str]:
    """{id: display text} for the given ids."""
    ids = sorted({int(i) for i in ids})
    if not ids:
        return {}
    if _is_wordpiece(tokenizer):
        special = set(tokenizer.all_special_tokens)
        out = {}
        for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
            tok = tok if tok is not None else f"<{i}>"
            out[i] = tok if tok in special else tok[2:] if tok.startswith("##") else " " + tok
        return out
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    return dict(zip(ids, texts))
