"""What the end-to-end drivers share (CTest runs them with Debian's python3, which has
python3-zmq): processes in their own session with their output in a log, killed by process group
at exit; bounded waits; loud failures that show the logs; free ports; /metrics scraping."""
import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

_procs = []


def fail(msg, *procs):
    print("FAIL:", msg, flush=True)
    for p in procs or _procs:
        p.dump()
    sys.exit(1)


def check(cond, msg, *procs):
    if not cond:
        fail(msg, *procs)
    print("ok:", msg, flush=True)


class Proc:
    """A background process; `listening` is the endpoint it printed ("listening on X")."""

    def __init__(self, name, cmd, workdir, env=None):
        os.makedirs(workdir, exist_ok=True)
        self.name = name
        self.log = os.path.join(workdir, name + ".log")
        self.out = open(self.log, "w")
        self.cmd = cmd
        full_env = dict(os.environ, OMP_NUM_THREADS="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        _procs.append(self)

    def text(self):
        if not self.out.closed:
            self.out.flush()
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                # What it wrote just before exiting may have landed after the read above.
                m = re.search(pattern, self.text())
                if m:
                    return m
                fail(f"{self.name} exited ({self.proc.returncode}) before printing /{pattern}/", self)
            time.sleep(0.05)
        fail(f"{self.name}: no /{pattern}/ within {timeout} s", self)

    def listening(self, timeout=60):
        return self.wait_for(r"listening on (\S+)", timeout).group(1)

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        # Whatever else is left in its session (mpirun's ranks).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.out.close()

    def running(self):
        return self.proc.poll() is None

    def dump(self):
        print(f"----- {self.name}: {' '.join(self.cmd)} -----")
        print(self.text()[-12000:])


@atexit.register
def _cleanup():
    for p in _procs:
        p.kill()


def run(cmd, timeout=60, check_rc=None, input=None):
    """Runs a command to its end; returns (rc, stdout, stderr)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        fail(f"{' '.join(cmd)} did not finish within {timeout} s")
    if check_rc is not None and r.returncode != check_rc:
        print(r.stdout[-4000:])
        print(r.stderr[-4000:])
        fail(f"{' '.join(cmd)} exited {r.returncode}, expected {check_rc}")
    return r.returncode, r.stdout, r.stderr


def wait_until(predicate, timeout, what, interval=0.02, last=None):
    """predicate()'s first truthy value within `timeout` s; else fails, adding `last()` (what the
    awaited state was at the end) to the message when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    fail(f"{what}: not within {timeout} s" + (f"; last: {last()}" if last else ""))


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def wait_for_state(what, predicate, timeout, interval=0.25):
    """Waits for predicate() -> (ok, detail) to be ok; returns its detail; a failure shows the
    last try's detail."""
    seen = {}

    def attempt():
        ok, seen["last"] = predicate()
        return ok
    wait_until(attempt, timeout, what, interval=interval, last=lambda: seen.get("last"))
    return seen["last"]


def cmake_list(value):
    """A CMake list passed as one argument ("--oversubscribe;--allow-run-as-root") as a list."""
    return [f for f in value.replace(";", " ").split() if f]


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def free_port_range(count):
    """A base port b with b .. b + count - 1 free on 127.0.0.1 now (the coordinator's metrics take
    b, worker w's b + w). The kernel picks b, so concurrent test runs rarely even try the same."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count >= 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    fail(f"no range of {count} free ports found")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def scrape_metrics(port, host="127.0.0.1"):
    """http://host:port/metrics as {series (name + labels): value}."""
    out = {}
    for line in http_get(f"http://{host}:{port}/metrics").splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def alive(pid):
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def rank_pids(coordinator_log):
    """World rank -> pid, from the coordinator's start-up lines."""
    pids = {0: int(re.search(r"coordinator \(pid (\d+)\)", coordinator_log).group(1))}
    for m in re.finditer(r"world rank (\d+) \(replica \d+, tp rank \d+ of \d+\) on \S+ \(pid (\d+)\)",
                         coordinator_log):
        pids[int(m.group(1))] = int(m.group(2))
    return pids
