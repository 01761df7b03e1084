"""The commit a cut-off host's stale delivery would make once its link is back, run on that host:
`python late_commit.py JOB_ID LEASE_ID ATTEMPT` with MISTUDIO_GPU_DEVICE / MISTUDIO_GPU_FENCE set to
the GPU lock token that delivery held (as its job process had them). It asks exactly what a training
asks before writing a checkpoint (JobContext.before_commit) and prints the answers as JSON."""

import json
import sys

from mistudio.coord import locks
from mistudio.queue.apps import huey_app
from mistudio.queue.context import JobContext
from mistudio.redis.connection import get_client

job_id, lease_id, attempt = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = huey_app("gpu").storage
ctx = JobContext(job_id=job_id, task="train_sae", queue="gpu", attempt=attempt, lease_id=lease_id,
                 worker_id="late-commit", storage=storage, results=get_client("results"))
print(json.dumps({"lease_valid": storage.lease_valid(lease_id), "gpu_fence_valid": locks.job_may_commit(),
                  "commit_allowed": ctx.before_commit(10), "stop_reason": ctx.stop_reason}))
