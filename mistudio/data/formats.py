"""The corpus file kinds: what the corpus reader reads (data/corpora.py) and so what a hub
dataset download keeps (data/download.py)."""

SUFFIXES = (".txt", ".jsonl", ".parquet")
