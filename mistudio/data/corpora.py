"""Text corpora: where documents come from, as an iterator of strings.

Sources, by what `source` is:
  None or "stdlib"   English text from the Python standard library, offline and deterministic:
                     the pydoc topics first (~128k tokens), then docstrings of stdlib modules (more).
  a .txt file        documents separated by blank lines
  a .jsonl file      one JSON object per line; the document is `text_field` ("text" by default)
  a .parquet file    the `text_field` column
  a folder           every .txt/.jsonl/.parquet file under it, in sorted order (e.g. a downloaded dataset)
  a hub id           a dataset downloaded with `download_dataset`, else streamed with `datasets`

Documents are read lazily, so asking for 12k tokens of the stdlib corpus parses a few files, not all.
"""

from __future__ import annotations

import ast
import json
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from mistudio.data.download import dataset_dir, is_complete, stream_hub_dataset
from mistudio.data.formats import SUFFIXES
from mistudio.errors import InvalidInput
from mistudio.models.download import is_repo_id
from mistudio.validation import exists, local_path, preview, shorten

STDLIB_SOURCE = "stdlib"
# Stdlib modules whose docstrings are not English prose (tests, demos, jokes) or already included.
_SKIP_MODULES = {
    "test",
    "idlelib",
    "turtledemo",
    "lib2to3",
    "pydoc_data",
    "this",
    "antigravity",
    "tkinter",
    "ensurepip",
}
_MIN_DOCSTRING_CHARS = 64  # one-liners like "Return self." add tokens but no text worth studying
_SNIFF_BYTES = 1 << 20  # how much of a text file is checked for being text
_MAX_BAD_BYTES = 0.01  # share of invalid UTF-8 bytes tolerated (a stray Latin-1 byte is not a binary file)
_NOT_TEXT_FIX = "point source at UTF-8 text (convert with `iconv -t utf-8`), or at .jsonl/.parquet data"


def _stdlib_files() -> Iterator[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP_MODULES:
            continue
        if (root / f"{name}.py").is_file():
            yield root / f"{name}.py"
        elif (root / name).is_dir():
            for path in sorted((root / name).rglob("*.py")):
                if not any(part in ("test", "tests", "idle_test") for part in path.parts):
                    yield path


def _docstrings(path: Path) -> Iterator[str]:
    """Module, class and function docstrings of one file (breadth-first, deterministic), without importing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
                yield doc


def stdlib_documents() -> Iterator[str]:
    """The offline default corpus: pydoc topics (sorted by topic), then stdlib docstrings (sorted by module)."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]
    for path in _stdlib_files():
        yield from _docstrings(path)


def check_text_file(path: Path) -> None:
    """InvalidInput unless the file's start is UTF-8 text: a binary file would train on replacement characters."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InvalidInput("source", f"cannot read {path}: {exc.strerror}", "check the file and its permissions") from None
    if b"\x00" in head:
        raise InvalidInput("source", f"{path} is not text: it holds NUL bytes (a binary file?)", _NOT_TEXT_FIX)
    bad = len(head) - len(head.decode("utf-8", errors="ignore").encode("utf-8"))
    if bad > max(3, _MAX_BAD_BYTES * len(head)):  # 3: a multi-byte character cut at the sniff's end
        raise InvalidInput("source", f"{path} is not UTF-8 text ({bad:,} of its first {len(head):,} bytes are not)",
                           _NOT_TEXT_FIX)


def _txt_documents(path: Path) -> Iterator[str]:
    check_text_file(path)
    paragraph: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield "".join(paragraph)
                paragraph = []
    if paragraph:
        yield "".join(paragraph)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    check_text_file(path)
    try:
        yield from _jsonl_rows(path, text_field)
    except UnicodeDecodeError as exc:
        raise InvalidInput("source", f"{path} is not UTF-8 text at byte {exc.start:,}", _NOT_TEXT_FIX) from None


def _jsonl_rows(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(
                    "source", f"{path}:{lineno} is not valid JSON ({exc.msg})", "write one JSON object per line"
                ) from None
            if not isinstance(row, dict) or text_field not in row:
                keys = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
                raise InvalidInput(
                    "text_field",
                    f"{text_field!r} is missing in {path}:{lineno} (has: {keys})",
                    "pass text_field= the key holding the text",
                )
            if not isinstance(row[text_field], str):
                raise InvalidInput(
                    "text_field",
                    f"{path}:{lineno} field {text_field!r} is not a string",
                    "point text_field at a text column",
                )
            yield row[text_field]


_NOT_PARQUET_FIX = "write it again (pandas.DataFrame.to_parquet or pyarrow), or use .txt/.jsonl files"


def _parquet_file(path: Path, text_field: str):
    """The open ParquetFile, its text column checked; InvalidInput for a 0-byte, cut or corrupt file."""
    import pyarrow as pa  # pyarrow: only for parquet corpora
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InvalidInput("source", f"{path} is not a readable parquet file ({type(exc).__name__}: {exc})",
                           _NOT_PARQUET_FIX) from None
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise InvalidInput(
            "text_field",
            f"{preview(text_field)} is not a column of {path} (columns: {shorten(', '.join(schema.names))})",
            "pass text_field= the text column",
        )
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InvalidInput("text_field", f"column {text_field!r} of {path} holds {kind}, not text",
                           "pass text_field= a string column")
    return pf


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow as pa

    pf = _parquet_file(path, text_field)
    try:
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if isinstance(text, str):
                    yield text
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InvalidInput("source", f"{path} is damaged ({type(exc).__name__}: {exc})", _NOT_PARQUET_FIX) from None


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    if path.suffix == ".txt":
        return _txt_documents(path)
    if path.suffix == ".jsonl":
        return _jsonl_documents(path, text_field)
    if path.suffix == ".parquet":
        return _parquet_documents(path, text_field)
    raise InvalidInput(
        "source",
        f"{path} has an unsupported suffix {path.suffix!r}",
        f"use a {', '.join(SUFFIXES)} file or a folder of them",
    )


def local_files(path: Path) -> list[Path]:
    """The corpus files of a file or folder (hidden folders, such as download caches, skipped)."""
    if path.is_file():
        return [path]
    files = [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix in SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    if not files:
        raise InvalidInput(
            "source", f"folder {path} holds no {'/'.join(SUFFIXES)} files", "point source at a folder of text data"
        )
    return files


def _hub_documents(dataset_id: str, text_field: str, split: str, config: str | None) -> Iterator[str]:
    folder = dataset_dir(dataset_id, split, config)
    if is_complete(folder):
        for file in local_files(folder):
            yield from _file_documents(file, text_field)
    else:
        yield from stream_hub_dataset(dataset_id, text_field, split, config)


def iter_documents(
    source: str | Path | None = None, text_field: str = "text", split: str = "train", config: str | None = None
) -> Iterator[str]:
    """Documents of a corpus, lazily and in a deterministic order. Empty documents are skipped."""
    if source is None or str(source) == STDLIB_SOURCE:
        docs: Iterator[str] = stdlib_documents()
    else:
        path = local_path(source, "source")
        if exists(path, "source"):
            docs = (doc for file in local_files(path) for doc in _file_documents(file, text_field))
        else:
            if isinstance(source, Path) or not is_repo_id(str(source)):
                raise InvalidInput(
                    "source",
                    f"{preview(str(source))} does not exist",
                    f"use 'stdlib' (the offline default), a {'/'.join(SUFFIXES)} file or folder, "
                    "or a Hugging Face dataset id",
                )
            docs = _hub_documents(str(source), text_field, split, config)
    for doc in docs:
        if doc.strip():
            yield doc


def source_name(source: str | Path | None) -> str:
    return STDLIB_SOURCE if source is None else str(source)


def check_file(path: Path, text_field: str) -> None:
    """The cheap checks of one corpus file (text is text, parquet opens and has the column)."""
    if path.suffix == ".parquet":
        _parquet_file(path, text_field)
    elif path.suffix in (".txt", ".jsonl"):
        check_text_file(path)


def check_corpus(source: str | None, text_field: str, field: str = "source") -> None:
    """A local corpus must exist and hold text (every file checked); a hub id is checked when the job runs."""
    if source in (None, "stdlib"):
        return
    if not isinstance(source, str):
        raise InvalidInput(field, f"must be a path or hub id string, got {preview(source)}", "pass a string")
    path = local_path(source, field)
    if not exists(path, field):
        if not is_repo_id(source):
            raise InvalidInput(field, f"{preview(source)} does not exist",
                               "use 'stdlib', a .txt/.jsonl/.parquet file or folder, or a hub dataset id")
        return
    try:
        for file in local_files(path):
            check_file(file, text_field)
        if next(iter_documents(source, text_field=text_field), None) is None:
            raise InvalidInput("source", f"{source} holds no text (empty corpus)",
                               f"point source at files with text in the {text_field!r} field")
    except InvalidInput as exc:  # the corpus is called `dataset` in a training config
        if exc.field != "source" or field == "source":
            raise
        raise InvalidInput(field, exc.problem, exc.fix) from None
