"""Queue tasks: the thin glue between the ML core and the job queue.

Importing this package registers every task (see mistudio.queue.tasks).
"""

from mistudio.tasks import data, diagnostics, training  # noqa: F401
from mistudio.tasks import features  # noqa: F401,E402  (extract_features)
