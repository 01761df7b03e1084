"""A cluster of separate hosts on one machine: network namespaces on a private bridge.

Each host is a network namespace with one veth link ("eth0", 10.77.0.N/24) into a switch
namespace holding the bridge, so nothing is added to the machine's own network: every
address lives inside the test's namespaces, and deleting them removes every link. A host
has its own root folder (its "disk": MISTUDIO_HOME and logs) and runs processes through
`ip netns exec`, each in its own process group; `kill_all()` SIGKILLs every process in
the namespace (`ip netns pids`: the children a worker spawned too), `link_down()` cuts
its cable. `Cluster.close()` tears everything down, bounded in time, and runs from a
`finally` (or the fixture) even when a test fails.

The redis host runs redis-server bound to its own address, with the ACL users of
mistudio.redis.acl (passwords hashed in a 0600 config file: never on a command line) and a
unix socket in the test's folder: the test itself observes Redis through that socket
(sockets on a filesystem are outside network namespaces), so cutting a host's link never
blinds the observer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.77.0"  # private to the test's namespaces: it cannot clash with the machine's own networks
REDIS_PORT = 6379
SETUP_TIMEOUT = 10.0  # seconds for any one `ip` command


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=check)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "the cluster tests make network namespaces and need root"
    if shutil.which("ip") is None:
        return "the cluster tests need iproute2's `ip` command"
    probe = f"msprobe{secrets.token_hex(3)}"
    try:
        made = ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` fails here: {made.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def required(environ=os.environ) -> bool:
    """In CI (CI=true) or with MISTUDIO_REQUIRE_CLUSTER=1 the cluster tests must run: a missing
    capability fails them instead of skipping them."""
    yes = ("1", "true", "yes", "on")
    return (environ.get("CI", "").lower() in yes) or (environ.get("MISTUDIO_REQUIRE_CLUSTER", "").lower() in yes)


class Host:
    """One machine of the cluster: a namespace, an address, a folder of its own."""

    def __init__(self, cluster: "Cluster", name: str, index: int):
        self.cluster, self.name = cluster, name
        self.ns = f"{cluster.prefix}-{name}"
        self.address = f"{SUBNET}.{index}"
        self.root = cluster.root / name
        self.root.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.mounts: dict[Path, Path] = {}  # mount point -> what is bound there (mount())
        ip("netns", "add", self.ns)
        ip("-n", self.ns, "link", "set", "lo", "up")
        # Made directly inside the two namespaces: the machine's own namespace never sees the link.
        ip("link", "add", "eth0", "netns", self.ns, "type", "veth", "peer", "name", f"p{index}",
           "netns", cluster.switch)
        ip("-n", cluster.switch, "link", "set", f"p{index}", "master", "br0", "up")
        ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "eth0", "up")

    @property
    def home(self) -> Path:
        """This host's MISTUDIO_HOME: on its own disk, seen by no other host."""
        return self.root / "home"

    def mount(self, source: Path, mount_point: Path) -> None:
        """Bind source at mount_point for every process this host starts from now on (as a share
        every device mounts, e.g. NFS). `ip netns exec` gives each process tree its own mount
        namespace, slave to the machine's: the bind is seen by this host's processes only."""
        self.mounts[mount_point] = source

    def _argv(self, argv: list[str]) -> list[str]:
        if not self.mounts:
            return ["ip", "netns", "exec", self.ns, *argv]
        binds = " && ".join(f'mount --bind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}"' for i in range(len(self.mounts)))
        pairs = [str(p) for source_and_point in ((s, m) for m, s in self.mounts.items()) for p in source_and_point]
        return ["ip", "netns", "exec", self.ns, "sh", "-c", f'{binds} && shift {2 * len(self.mounts)} && exec "$@"',
                "sh", *pairs, *argv]

    def run(self, argv: list[str], env: dict, log_name: str) -> subprocess.Popen:
        """Start argv inside this host's namespace, in its own process group, output to a log."""
        log = open(self.root / f"{log_name}.log", "ab")
        try:
            proc = subprocess.Popen(self._argv(argv), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        proc.log_path = self.root / f"{log_name}.log"
        self.procs.append(proc)
        return proc

    def run_once(self, argv: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run argv inside the namespace to its end, output captured."""
        return subprocess.run(self._argv(argv), env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def pids(self) -> list[int]:
        """Every process in this host's namespace (what a power cut would end)."""
        out = ip("netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split()]

    def commands(self) -> list[str]:
        """The command lines of the host's processes (for assertions about what still runs)."""
        lines = []
        for pid in self.pids():
            try:
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
        return lines

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the host at once (the node dies), and reap the ones we started."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            for proc in self.procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for proc in self.procs:
                try:
                    proc.wait(0.2)
                except subprocess.TimeoutExpired:
                    pass
            if not self.pids() and all(p.poll() is not None for p in self.procs):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {self.name}: processes {self.pids()} survived SIGKILL for {timeout} s")
            time.sleep(0.05)

    def link_down(self) -> None:
        """Pull the host's cable: it keeps running but reaches nobody."""
        ip("-n", self.ns, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        ip("-n", self.ns, "link", "set", "eth0", "up")

    def log(self, log_name: str) -> str:
        path = self.root / f"{log_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> dict[str, str]:
        return {p.stem: p.read_text(errors="replace") for p in sorted(self.root.glob("*.log"))}


class Cluster:
    """Hosts on a private bridge; `close()` removes every namespace, process and link it made."""

    def __init__(self, root: Path):
        self.prefix = f"ms{secrets.token_hex(3)}"  # unique per run: parallel runs never share a namespace
        self.root = root
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts) + 1)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Kill every host's processes, then delete the namespaces (their links go with them)."""
        errors = []
        for host in self.hosts.values():
            try:
                host.kill_all()
            except Exception as exc:  # keep tearing down the rest
                errors.append(str(exc))
        for ns in [h.ns for h in self.hosts.values()] + [self.switch]:
            ip("netns", "del", ns, check=False)
        left = [ns for ns in ip("netns", "list", check=False).stdout.split() if ns.startswith(self.prefix)]
        if errors or left:
            raise RuntimeError(f"cluster teardown: {errors} namespaces left: {left}")
