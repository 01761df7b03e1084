"""Corpora: the stdlib default, local .txt/.jsonl/.parquet files and folders, and their errors."""

from __future__ import annotations

import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ml_helpers import mistudio_home  # noqa: F401  (fixture)

from mistudio.data.corpora import iter_documents
from mistudio.errors import InvalidInput


def test_stdlib_corpus_is_deterministic_english_text():
    from pydoc_data.topics import topics

    first = list(itertools.islice(iter_documents(), 100))
    assert first == list(itertools.islice(iter_documents("stdlib"), 100))
    assert first[0] == topics[sorted(topics)[0]]  # pydoc topics first, sorted by name
    after_topics = first[len(topics) :]
    assert after_topics and all(len(doc) >= 64 for doc in after_topics)  # then stdlib docstrings
    assert sum(len(d) for d in first) > 300_000


def test_local_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph\nstill first.\n\n\nSecond paragraph.\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "from jsonl", "id": 1}) + "\n\n" + json.dumps({"text": "  "}) + "\n"
    )
    pq.write_table(pa.table({"body": ["from parquet", None]}), tmp_path / "c.parquet")
    assert list(iter_documents(tmp_path / "a.txt")) == ["First paragraph\nstill first.\n", "Second paragraph.\n"]
    assert list(iter_documents(str(tmp_path / "b.jsonl"))) == ["from jsonl"]  # blank documents skipped
    assert list(iter_documents(tmp_path / "c.parquet", text_field="body")) == ["from parquet"]
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "junk.txt").write_text("hidden folders are skipped")
    (tmp_path / "c.parquet").unlink()
    assert list(iter_documents(tmp_path)) == ["First paragraph\nstill first.\n", "Second paragraph.\n", "from jsonl"]


def test_missing_text_field_lists_what_exists(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"content": "x", "meta": 2}) + "\n")
    with pytest.raises(InvalidInput, match=r"text_field: 'text' is missing in .*d.jsonl:1 \(has: content, meta\)"):
        list(iter_documents(tmp_path / "d.jsonl"))
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "e.parquet")
    with pytest.raises(InvalidInput, match=r"'text' is not a column of .*\(columns: content\)"):
        list(iter_documents(tmp_path / "e.parquet"))
    (tmp_path / "f.jsonl").write_text("{not json\n")
    with pytest.raises(InvalidInput, match="f.jsonl:1 is not valid JSON"):
        list(iter_documents(tmp_path / "f.jsonl"))


def test_bad_sources(tmp_path, mistudio_home):
    with pytest.raises(InvalidInput, match="source: './nope.txt' does not exist"):
        list(iter_documents("./nope.txt"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InvalidInput, match="unsupported suffix '.csv'"):
        list(iter_documents(tmp_path / "x.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="holds no"):
        list(iter_documents(tmp_path / "empty"))
