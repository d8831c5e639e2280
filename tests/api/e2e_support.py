"""Helpers of the API end-to-end drivers (CTest runs them with Debian's python3, which has
python3-zmq): processes in their own session with their output in a log, killed by process group
at exit; bounded waits; loud failures that show the logs."""
import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time

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


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.02)
    fail(f"{what}: not within {timeout} s")


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
