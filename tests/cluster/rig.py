"""miStudio on the namespace cluster: a Redis host, worker hosts, a client host, an observer.

- **redis** runs redis-server bound to its own address (10.77.0.1), with the repository's
  redis.conf, the default user off and miStudio's ACL users (mistudio.redis.acl), passwords
  only as SHA-256 in a 0600 config file.
- **worker hosts** run `mistudio worker --queue gpu` with their own MISTUDIO_DEVICE_ID and
  MISTUDIO_HOME, connecting over the bridge as the app user (REDIS_URL names the user, the
  password comes in REDIS_PASSWORD: the environment, never argv).
- **client** submits and watches through the CLI, like a laptop on the same network.
- The **observer** is the test process: it reads job records, events, heartbeats and the
  leader through the server's unix socket, as the app user, so a cut link never blinds it.

Timings are short (a lease of a few seconds) and set by the same environment variables a
real device reads, so each scenario takes seconds of waiting, not minutes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from helpers import wait_for
from netns import REDIS_PORT, Cluster, Host

from mistudio.redis import acl, server

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mistudio.cli"]

# The cluster's clocks: seconds, as a device reads them from its environment.
LEASE = 5.0  # MISTUDIO_LEASE_SECONDS: a lost host's job runs again after this
LEADER_TTL = 3.0  # MISTUDIO_LEADER_TTL: a lost leader is replaced within this
HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TTL = 2.0  # a silent host drops out of the heartbeats after this
REAP_INTERVAL = max(0.5, min(5.0, LEASE / 4))  # how often the leader reaps (queue/consumer.py)


def _clean_environ() -> dict:
    """This process's environment without any miStudio or Redis setting (each host sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MISTUDIO_", "REDIS_"))}


class MistudioCluster:
    def __init__(self, root: Path, workers: tuple[str, ...] = ("jetson-a", "jetson-b"), shared_store: bool = False):
        self.net = Cluster(root)
        self.app_password = secrets.token_urlsafe(24)
        self.admin_password = secrets.token_urlsafe(24)
        # The shared run store: a folder on the "file server" (store_export), bound at the same
        # path (store_mount) into every worker and the client, as an NFS mount would be. Outside
        # the hosts the mount point stays empty: what a host writes there reaches the others only
        # through the bind.
        self.store_export = root / "nfs-server" / "runs" if shared_store else None
        self.store_mount = root / "mnt" / "mistudio-runs" if shared_store else None
        try:
            self.redis = self.net.add_host("redis")
            self.workers = {name: self.net.add_host(name) for name in workers}
            self.client = self.net.add_host("client")
            if shared_store:
                self.store_export.mkdir(parents=True)
                self.store_mount.mkdir(parents=True)
                for host in [*self.workers.values(), self.client]:
                    host.mount(self.store_export, self.store_mount)
            self._start_redis()
        except BaseException:
            self.net.close()
            raise

    # --- the redis host ---------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.redis.root / "redis.sock"

    def _start_redis(self) -> None:
        binary, version = server.find_binary()
        data = self.redis.root / "data"
        data.mkdir()
        lines = [
            f'include "{server.config_path()}"',
            f"bind {self.redis.address}",
            f"port {REDIS_PORT}",
            f'unixsocket "{self.socket}"',  # the observer's way in (not a network: outside the namespaces)
            "unixsocketperm 700",
            f'dir "{data}"',
            'logfile ""',
            "daemonize no",
            "protected-mode yes",
            *acl.config_lines(self.app_password, self.admin_password, version),
        ]
        config = self.redis.root / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.redis_proc = self.redis.run([binary, str(config)], _clean_environ(), "redis-server")
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.redis_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.redis.log('redis-server')}")
            time.sleep(0.05)

    @property
    def redis_url(self) -> str:
        """What every host is given: the app user at the redis host's address (no password in it)."""
        return f"redis://{acl.APP_USER}@{self.redis.address}:{REDIS_PORT}"

    # --- hosts --------------------------------------------------------------------------

    def env(self, host: Host, **extra) -> dict:
        env = _clean_environ()
        env.update({
            "REDIS_URL": self.redis_url,
            "REDIS_PASSWORD": self.app_password,
            "MISTUDIO_HOME": str(host.home),
            "MISTUDIO_DEVICE_ID": host.name,
            "MISTUDIO_PROFILE": "ci",
            "MISTUDIO_LEASE_SECONDS": str(LEASE),
            "MISTUDIO_LEADER_TTL": str(LEADER_TTL),
            "MISTUDIO_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
            "MISTUDIO_HEARTBEAT_TTL": str(HEARTBEAT_TTL),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        })
        if host.mounts:
            env["MISTUDIO_RUN_STORE"] = str(self.store_mount)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start_worker(self, name: str, queue: str = "gpu", wait: bool = True, **env) -> subprocess.Popen:
        host = self.workers[name]
        proc = host.run([*CLI, "worker", "--queue", queue], self.env(host, **env), f"worker-{queue}")
        if wait:
            self.wait_worker(name, proc)
        return proc

    def wait_worker(self, name: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
        """Until the host's worker beats (it is consuming)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker on {name} exited with {proc.returncode}:\n{self.workers[name].logs()}")
            beat = next((w for w in self.heartbeats() if w.get("device") == name), None)
            if beat:
                return beat
            time.sleep(0.1)
        raise TimeoutError(f"the worker on {name} did not start in {timeout} s:\n{self.workers[name].logs()}")

    def cli(self, host: Host, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return host.run_once([*CLI, *args], self.env(host), timeout=timeout)

    def cli_background(self, host: Host, *args: str, log_name: str) -> subprocess.Popen:
        return host.run([*CLI, *args], self.env(host), log_name)

    # --- the observer (this process, through the unix socket) --------------------------

    @contextmanager
    def observing(self):
        """Point this process's miStudio at the cluster's Redis (unix socket, app user)."""
        from mistudio.redis.connection import reset_pools

        saved = {k: os.environ.get(k) for k in ("REDIS_URL", "REDIS_USERNAME", "REDIS_PASSWORD")}
        os.environ.update({"REDIS_URL": f"unix://{self.socket}", "REDIS_USERNAME": acl.APP_USER,
                           "REDIS_PASSWORD": self.app_password})
        reset_pools()
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            reset_pools()

    def heartbeats(self) -> list[dict]:
        from mistudio.coord.heartbeat import healthy_workers
        from mistudio.redis.connection import get_client

        return healthy_workers(get_client("locks"))

    def devices_beating(self) -> set[str]:
        return {w.get("device") for w in self.heartbeats()}

    def record(self, job_id: str) -> dict:
        from mistudio.queue import records
        from mistudio.redis.connection import get_client

        return records.get(get_client("results"), job_id) or {}

    def only_job(self, timeout: float = 60.0) -> str:
        """The id of the one job the cluster has (the client submitted it)."""
        from mistudio import jobs

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = jobs.list_jobs()
            if listed:
                assert len(listed) == 1, listed
                return listed[0]["id"]
            time.sleep(0.1)
        raise TimeoutError(f"no job was submitted in {timeout} s:\n{self.client.logs()}")

    def _admin(self):
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), username=acl.ADMIN_USER, password=self.admin_password,
                           decode_responses=True, socket_timeout=10)

    def acl_refusals(self) -> list[dict]:
        """What the server refused a user (ACL LOG), failed logins aside: empty when everything
        miStudio did on every host was allowed to the app user."""
        with self._admin() as admin:
            return [{k: e.get(k) for k in ("reason", "object", "username", "client-info")}
                    for e in admin.acl_log() if e["reason"] != "auth"]

    def clear_acl_log(self) -> None:
        with self._admin() as admin:
            admin.acl_log_reset()

    @property
    def cli_argv(self) -> list[str]:
        return list(CLI)

    def close(self) -> None:
        self.net.close()


class LeaderLog(threading.Thread):
    """Samples `cluster:leader` every 20 ms: every (term, node) seen, with when it was first seen."""

    def __init__(self):
        super().__init__(name="leader-log", daemon=True)
        self.seen: dict[tuple[int, str], float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        from mistudio.coord import leader
        from mistudio.redis.connection import get_client

        client = get_client("locks")
        while not self.stopped.is_set():
            try:
                now = leader.current(client)
            except Exception:
                now = None
            if now is not None:
                self.seen.setdefault((now["term"], now["node"]), time.time())
            self.stopped.wait(0.02)

    def first_time(self, device: str) -> float | None:
        times = [t for (term, node), t in self.seen.items() if node.startswith(f"{device}:")]
        return min(times) if times else None

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def terms_claimed(hosts: list[Host]) -> dict[int, set[str]]:
    """term -> the nodes whose logs say they became leader in it (Elector: "NODE: leader (term N)")."""
    import re

    claimed: dict[int, set[str]] = {}
    for host in hosts:
        for text in host.logs().values():
            for node, term in re.findall(r"(\S+): leader \(term (\d+)\)", text):
                claimed.setdefault(int(term), set()).add(node)
    return claimed


# --- what the scenarios share ---------------------------------------------------------

# A tiny training: seconds per attempt, with a checkpoint every 10 steps.
TRAIN = ("train", "--steps", "60", "--checkpoint-every", "10", "--log-every", "2", "--json", "--wait")


def training_steps(channel: str, after_seq: int = 0) -> list[int]:
    from mistudio import events

    return [e.payload.step for e in events.history(channel, after_seq=after_seq)
            if isinstance(e.payload, events.TrainingProgress) and e.payload.phase == "training"]


def checkpoints(channel: str) -> list[int]:
    from mistudio import events

    return [e.payload.step for e in events.history(channel) if isinstance(e.payload, events.TrainingCheckpoint)]


FAULTS = Path(__file__).resolve().parents[1] / "faults"  # sitecustomize.py: hold a job at a checkpoint commit
HELD_AT = 20  # the step whose checkpoint commit the first host holds (step 10's is committed before)


def start_held_worker(cluster: MistudioCluster, name: str, folder: str) -> Path:
    """Start `name`'s worker with its job held at its first checkpoint commit from step HELD_AT
    on (tests/faults); returns the pause folder: `paused` appears there, write `resume` to go on."""
    pause = cluster.net.root / folder
    pause.mkdir()
    base = cluster.env(cluster.workers[name])["PYTHONPATH"]
    cluster.start_worker(name, MISTUDIO_TEST_PAUSE_COMMIT=pause, MISTUDIO_TEST_PAUSE_COMMIT_STEP=HELD_AT,
                         PYTHONPATH=os.pathsep.join([str(FAULTS), base]))
    return pause


def begin_training(cluster: MistudioCluster, first: str = "jetson-a"):
    """Start the leader log and `first`'s worker alone (so it leads and takes the job), then the
    client's `mistudio train --wait`; wait until the job is held at its step-20 checkpoint commit
    (step 10's committed), so however fast the machine trains, the job is mid-way when the test
    acts. Returns (leader log, the client's process, job id, channel)."""
    from mistudio.redis import keys

    leaders = LeaderLog()
    leaders.start()
    pause = start_held_worker(cluster, first, "pause")
    wait_for(lambda: leaders.first_time(first), timeout=30, message=f"{first} to lead (the only worker)")
    watcher = cluster.cli_background(cluster.client, *TRAIN, log_name="train")
    job_id = cluster.only_job()
    wait_for(lambda: (pause / "paused").exists(), timeout=300, message=f"the job held at step {HELD_AT} on {first}")
    return leaders, watcher, job_id, keys.training_channel(job_id)


def assert_one_leader_per_term(leaders: LeaderLog, hosts: list[Host]) -> dict[int, set[str]]:
    """Every term had one leader: in what each node logged, and in what the observer saw."""
    leaders.stop()
    claimed = terms_claimed(hosts)
    assert claimed and all(len(nodes) == 1 for nodes in claimed.values()), claimed
    observed: dict[int, set[str]] = {}
    for term, node in leaders.seen:
        observed.setdefault(term, set()).add(node)
    assert all(len(nodes) == 1 for nodes in observed.values()), observed
    assert {n.split(":")[0] for nodes in claimed.values() for n in nodes} == {h.name for h in hosts}
    assert max(claimed) > min(claimed)  # the new leader's term is a new one
    return claimed
