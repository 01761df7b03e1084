"""Fault injection for tests/test_faults_queue.py: Python loads this module at start-up in
every process started with tests/faults on PYTHONPATH (the worker and its job's child).

MISTUDIO_TEST_PAUSE_COMMIT=DIR: the first checkpoint commit of the process (a call of
JobContext.before_commit with a step) writes DIR/paused, waits until DIR/resume exists,
then runs the real before_commit. The test takes Redis away in between, so the real
lease check runs while Redis is down. Nothing is replaced: the real check does the work.
MISTUDIO_TEST_PAUSE_COMMIT_STEP=N: pause at the first commit of a step >= N instead (the
earlier checkpoints commit as usual), so a test acts while a job that has a checkpoint is held.
"""

import os

_DIR = os.environ.get("MISTUDIO_TEST_PAUSE_COMMIT")
_FROM_STEP = int(os.environ.get("MISTUDIO_TEST_PAUSE_COMMIT_STEP") or 0)

if _DIR:
    import json
    import time
    from pathlib import Path

    from mistudio.queue import context

    _real_before_commit = context.JobContext.before_commit
    _paused = []

    def _before_commit(self, *args):
        if args and not _paused and int(args[0]) >= _FROM_STEP:
            _paused.append(True)
            folder = Path(_DIR)
            (folder / "paused").write_text(json.dumps({"pid": os.getpid(), "job": self.job_id, "step": int(args[0])}))
            deadline = time.monotonic() + 300
            while not (folder / "resume").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return _real_before_commit(self, *args)

    context.JobContext.before_commit = _before_commit
