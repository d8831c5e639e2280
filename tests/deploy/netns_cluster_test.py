#!/usr/bin/env python3
"""Several hosts on one machine (CTest deploy.netns_cluster): network namespaces with addresses
of their own on a bridge, and the service deployed across them the way an operator deploys it.

1. Hosts: namespaces h0, h1 (the cluster) and cl (a client), veth pairs on a bridge, one /24.
2. deploy/launch.sh with a hostfile naming h0 and h1 runs mpirun, whose remote agent (Open
   MPI's plm_rsh_agent) is tests/deploy/netns-rsh.sh, `ip netns exec` in place of ssh: the
   coordinator (world rank 0) and replica 0 (TP=2) on h0, replica 1 (TP=2) on h1, the demo
   model models/kjv-llama, CURVE on ([security] in the config), ZeroMQ on h0's own address.
3. From cl, over the network: llmctl with an authorized CURVE key streams the greedy completion
   the in-process `generate` tool makes; a load of requests completes in full on both replicas;
   the Python client does the same; a client with a key the server does not list, and one
   without CURVE, are refused with errors naming the cause.
4. The HTTP gateway on cl (a CURVE client of h0, API key required): 401 without the key, the
   completion with it. A capture on the hosts' links meanwhile reads the plain HTTP (prompt and
   API key) but, in the ZeroMQ traffic between cl and h0, neither the prompt, nor the completion,
   nor any JSON of the protocol: only the CURVE handshake and ciphertext.
5. Prometheus (Debian's binary, the project's deploy/prometheus config) discovers every rank
   through the file_sd targets launch.sh wrote, and scrapes each worker rank on its host's
   address; every worker rank reports tokens computed (both replicas served).
6. SIGTERM to the coordinator: the job drains on both hosts and launch.sh exits 0.
Skips (77) where namespaces cannot be made (not root, no CAP_NET_ADMIN, no `ip`). Namespaces,
links and processes are removed on every exit path (an internal deadline keeps it inside CTest's
timeout; leftovers of a killed run are removed by the next).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, fail, free_port_range, wait_for_state  # noqa: E402

BUDGET_S = 240  # CTest's TIMEOUT is 300: the cleanup always gets to run
PREFIX = f"ssd{os.getpid()}"
NS = {"h0": f"{PREFIX}-h0", "h1": f"{PREFIX}-h1", "cl": f"{PREFIX}-cl"}
BRIDGE = f"{PREFIX}b"
PROCS = []
CREATED_NS = []
CREATED_LINKS = []
PROMPT = "And God said unto Moses,"
MAX_TOKENS = 24
API_KEY = "test-api-key-0123456789abcdef"


class Deadline(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def sh(cmd, check=True, timeout=30, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


def skip(why):
    log(f"SKIP: {why}")
    sys.exit(77)


def cleanup():
    for p in PROCS:
        p.kill()
    # Processes still inside a namespace (an orted whose mpirun died) go first.
    for ns in CREATED_NS:
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for ns in CREATED_NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for link in CREATED_LINKS:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    CREATED_NS.clear()
    CREATED_LINKS.clear()


def remove_leftovers():
    """Namespaces and bridges of earlier runs whose process is gone (a run killed by SIGKILL)."""
    def dead(pid):
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        m = re.match(r"(ssd(\d+)-\w+)", line)
        if m and dead(int(m.group(2))):
            for pid in subprocess.run(["ip", "netns", "pids", m.group(1)], capture_output=True,
                                      text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", m.group(1)], capture_output=True)
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    for m in re.finditer(r"^\d+: (ssd(\d+)b)[:@]", r.stdout, re.M):
        if dead(int(m.group(2))):
            subprocess.run(["ip", "link", "del", m.group(1)], capture_output=True)


def pick_subnet():
    routes = sh(["ip", "-4", "route"]).stdout + sh(["ip", "-4", "addr"]).stdout
    base = os.getpid()
    for i in range(250):
        a, b = 200 + (base + i) % 50, (base // 50 + i) % 250
        net = f"10.{a}.{b}."
        if net not in routes:
            return net
    skip("no free 10.x.y.0/24 subnet for the test's bridge")


def make_hosts():
    if os.geteuid() != 0:
        skip("needs root (CAP_NET_ADMIN) to create network namespaces (ip netns add); "
             f"running as uid {os.geteuid()}")
    if not shutil.which("ip"):
        skip("the `ip` command (Debian package iproute2) is missing")
    remove_leftovers()
    net = pick_subnet()
    r = subprocess.run(["ip", "netns", "add", NS["h0"]], capture_output=True, text=True)
    if r.returncode != 0:
        skip(f"cannot create a network namespace (ip netns add: {r.stderr.strip()}): needs "
             "CAP_NET_ADMIN and CAP_SYS_ADMIN")
    CREATED_NS.append(NS["h0"])
    # `ip -n` / `ip netns exec` remount /sys inside the namespace: in a chroot or some containers
    # that fails ("mount --make-rslave / failed") although `ip netns add` worked.
    r = subprocess.run(["ip", "-n", NS["h0"], "link", "set", "lo", "up"], capture_output=True, text=True)
    if r.returncode != 0:
        skip(f"cannot enter a network namespace here (ip -n {NS['h0']} link set lo up: "
             f"{r.stderr.strip()}): a chroot or a container without mount rights")
    sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
    CREATED_LINKS.append(BRIDGE)
    sh(["ip", "addr", "add", f"{net}1/24", "dev", BRIDGE])
    sh(["ip", "link", "set", BRIDGE, "up"])
    addr = {}
    for i, (name, ns) in enumerate(NS.items()):
        if ns not in CREATED_NS:
            sh(["ip", "netns", "add", ns])
            CREATED_NS.append(ns)
        veth = f"{PREFIX}v{i}"
        sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        CREATED_LINKS.append(veth)
        sh(["ip", "link", "set", veth, "master", BRIDGE, "up"])
        addr[name] = f"{net}{100 if name == 'cl' else 10 + i}"
        sh(["ip", "-n", ns, "addr", "add", f"{addr[name]}/24", "dev", "eth0"])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    return net, addr


PROBE = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1); print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.sendall(b"ok"); c.close()
"""


def probe_bridge(addr):
    """h0 listens, cl connects over the bridge: a host firewall filtering bridged traffic
    (br_netfilter) would make every later step time out, so say so and skip."""
    server = subprocess.Popen(["ip", "netns", "exec", NS["h0"], sys.executable, "-c", PROBE, addr["h0"]],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().strip()
        r = in_ns("cl", [sys.executable, "-c", "import socket,sys; s=socket.create_connection((sys.argv[1], "
                         "int(sys.argv[2])), timeout=5); print(s.recv(2).decode())", addr["h0"], port], timeout=20)
        if r.stdout.strip() != "ok":
            skip(f"TCP between the test's namespaces over bridge {BRIDGE} fails ({r.stderr.strip()[-200:]}): "
                 "a firewall filtering bridged traffic? (sysctl net.bridge.bridge-nf-call-iptables)")
    finally:
        server.kill()
        server.wait()


class Sniffer:
    """Captures the TCP payloads on the given links (AF_PACKET sockets on the hosts' veths: frames
    bridged between two namespaces never reach the bridge device itself), per port, to check
    what an eavesdropper on the network would read."""

    def __init__(self, links):
        import threading
        self.socks = []
        for link in links:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            sock.bind((link, 0))
            self.socks.append(sock)
        self.payload = {}
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import select
        while not self.stop:
            ready, _, _ = select.select(self.socks, [], [], 0.2)
            for sock in ready:
                self.take(sock.recv(65535))

    def take(self, frame):
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
            return
        tcp = 14 + (frame[14] & 15) * 4
        sport, dport = int.from_bytes(frame[tcp:tcp + 2], "big"), int.from_bytes(frame[tcp + 2:tcp + 4], "big")
        data = frame[tcp + (frame[tcp + 12] >> 4) * 4:14 + int.from_bytes(frame[16:18], "big")]
        if data:
            for port in (sport, dport):
                self.payload.setdefault(port, bytearray()).extend(data)

    def close(self):
        self.stop = True
        self.thread.join()
        for sock in self.socks:
            sock.close()


def start(name, cmd, workdir, env=None, ns=None):
    p = Proc(name, (["ip", "netns", "exec", NS[ns]] if ns else []) + cmd, workdir, env=env)
    PROCS.append(p)
    return p


def in_ns(ns, cmd, timeout=60, env=None):
    return subprocess.run(["ip", "netns", "exec", NS[ns]] + cmd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def http(url, body=None, headers=None, timeout=30):
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


PY_CLIENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from shardserve_client import Client, UnavailableError
endpoint, server_key, client_key, prompt, n = sys.argv[2:7]
kw = {} if server_key == "-" else {"curve_server_key_file": server_key, "curve_client_key_file": client_key}
try:
    with Client(endpoint, **kw) as c:
        done = c.generate(prompt, max_tokens=int(n), temperature=0, timeout=60)
        print(json.dumps({"text": done.text}))
except UnavailableError as e:
    print(json.dumps({"unavailable": str(e)}))
"""


def main():
    ap = argparse.ArgumentParser()
    for a in ("--source-dir", "--coordinator", "--worker", "--llmctl", "--gateway", "--generate",
              "--prometheus", "--mpirun", "--workdir"):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    src = args.source_dir
    model = os.path.join(src, "models", "kjv-llama")
    net, addr = make_hosts()  # first: it skips where namespaces cannot be made
    workdir = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    log(f"hosts: {', '.join(f'{k}={NS[k]} {v}' for k, v in addr.items())}; bridge {BRIDGE} {net}1")
    probe_bridge(addr)

    # ----- keys and configuration -----------------------------------------------------------------
    keys = os.path.join(workdir, "keys")
    clients = os.path.join(keys, "clients")
    os.makedirs(clients)
    for who in ("server", "ops", "gateway", "stranger"):
        sh([args.llmctl, "keygen", os.path.join(keys, who)])
    for who in ("ops", "gateway"):
        shutil.copy(os.path.join(keys, f"{who}.pub"), clients)
    api_keys = os.path.join(keys, "api-keys")
    with open(api_keys, "w") as f:
        f.write(f"# test key\n{API_KEY}\n")
    os.chmod(api_keys, 0o600)
    metrics = 9400
    config = os.path.join(workdir, "service.toml")
    with open(config, "w") as f:
        f.write(f'model = "{model}"\ntp = 2\nreplicas = 2\n'
                "[kv]\nnum_blocks = 256\n"
                "[scheduler]\nmax_num_seqs = 8\nmax_num_batched_tokens = 256\nmax_model_len = 256\n"
                f'[ports]\nhost = "{addr["h0"]}"\nzmq = 5555\nmetrics = {metrics}\nmetrics_host = "0.0.0.0"\n'
                "[runtime]\nstartup_timeout_s = 120.0\nshutdown_grace_s = 5.0\n"
                f'[security]\ncurve_secret_key_file = "{keys}/server.key"\n'
                f'curve_public_key_file = "{keys}/server.pub"\nauthorized_clients_dir = "{clients}"\n')
    hostfile = os.path.join(workdir, "hostfile")
    with open(hostfile, "w") as f:
        f.write(f"# the cluster's hosts: network namespaces\n{NS['h0']} slots=8\n{NS['h1']}\n")

    # ----- Prometheus: the project's config, targets from launch.sh ------------------------------
    prom_dir = os.path.join(workdir, "prometheus")
    shutil.copytree(os.path.join(src, "deploy", "prometheus"), prom_dir)
    for f in os.listdir(os.path.join(prom_dir, "targets")):
        os.remove(os.path.join(prom_dir, "targets", f))  # the one-host examples
    yml = os.path.join(prom_dir, "prometheus.yml")
    text = open(yml).read()
    for key, value in (("scrape_interval", "1s"), ("scrape_timeout", "1s"), ("evaluation_interval", "1s")):
        text = re.sub(rf"^(\s*{key}:\s*)\S+", rf"\g<1>{value}", text, count=1, flags=re.M)
    text = text.replace("refresh_interval: 30s", "refresh_interval: 1s")
    open(yml, "w").write(text)

    # ----- the job: deploy/launch.sh -> mpirun across the namespaces ------------------------------
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{os.path.dirname(args.mpirun)}:{os.environ['PATH']}")
    launch = [os.path.join(src, "deploy", "launch.sh"), "--hostfile", hostfile, "--gpus-per-node", "2",
              "--tp", "2", "--replicas", "2", "--cpu", "--model", model, "--config", config,
              "--coordinator", args.coordinator, "--worker", args.worker,
              "--agent", os.path.join(src, "tests", "deploy", "netns-rsh.sh"),
              "--iface", f"{net}0/24", "--targets", os.path.join(prom_dir, "targets"),
              "--host-address", f"{NS['h0']}={addr['h0']}", "--host-address", f"{NS['h1']}={addr['h1']}",
              "--", "--mca", "btl_vader_single_copy_mechanism", "none"]
    dry = sh(launch[:-4] + ["--dry-run"], env=env)
    check("plm_rsh_agent" in dry.stdout and "oob_tcp_if_include" in dry.stdout and
          "odls_base_sigkill_timeout 20" in dry.stdout,
          "launch.sh --dry-run: rsh agent, interface and drain-length kill timeout on mpirun's line")
    targets_dir = os.path.join(prom_dir, "targets")
    workers_yml = open(os.path.join(targets_dir, "workers-shardserve.yml")).read()
    check(all(f"{addr['h0']}:{metrics + w}" in workers_yml for w in (1, 2)) and
          all(f"{addr['h1']}:{metrics + w}" in workers_yml for w in (3, 4)),
          "file_sd targets: worker ranks 1-2 on h0's address, 3-4 on h1's")

    prom_port = free_port_range(1)
    start("prometheus", [args.prometheus, f"--config.file={yml}", f"--storage.tsdb.path={workdir}/tsdb",
                         f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
          workdir)
    job = start("job", launch, workdir, env=env)
    endpoint = f"tcp://{addr['h0']}:5555"

    def serving():
        if not job.running():
            fail(f"the job exited {job.proc.returncode} during start-up")
        t = job.text()
        return f"listening on {endpoint}" in t, "no 'listening on' line yet"
    wait_for_state("the coordinator listening on h0's address", serving, 150)
    check("CURVE on" in job.text(), "the front end has CURVE on")

    # ----- clients on their own host --------------------------------------------------------------
    sniffer = Sniffer([f"{PREFIX}v0", f"{PREFIX}v2"])  # h0's link and cl's
    curve_ops = ["--curve-server-key", f"{keys}/server.pub", "--curve-client-key", f"{keys}/ops.key"]
    llmctl = [args.llmctl, "--endpoint", endpoint, "--timeout", "60"]
    gen = sh([args.generate, "--model", model, "--prompt", PROMPT, "--max-tokens", str(MAX_TOKENS),
              "--temperature", "0"], timeout=120)
    r = in_ns("cl", llmctl + curve_ops + ["stream", "--prompt", PROMPT, "--max-tokens", str(MAX_TOKENS),
                                          "--temperature", "0"], timeout=90)
    check(r.returncode == 0, f"llmctl stream from cl with an authorized key: rc {r.returncode} {r.stderr}")
    text = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    check(gen.stdout == PROMPT + text + "\n",
          f"the streamed text across hosts is generate's greedy completion: {text!r}")

    report = os.path.join(workdir, "bench.json")
    r = in_ns("cl", llmctl + curve_ops + ["bench", "--num-requests", "12", "--concurrency", "6",
                                          "--prompt-len", "16", "--output-len", "16", "--check",
                                          "--json", report, "--run-timeout", "120"], timeout=150)
    check(r.returncode == 0, f"llmctl bench --check: 12 requests to their full outputs ({r.stdout[-300:]}{r.stderr})")
    r = in_ns("cl", llmctl + curve_ops + ["status", "--json"])
    status = json.loads(r.stdout)
    steps = [rep["steps"] for rep in status["replicas"]]
    check(len(steps) == 2 and all(s > 0 for s in steps), f"both replicas (h0 and h1) ran steps: {steps}")

    py = [sys.executable, "-c", PY_CLIENT, os.path.join(src, "client", "python"), endpoint]
    r = in_ns("cl", py + [f"{keys}/server.pub", f"{keys}/ops.key", PROMPT, str(MAX_TOKENS)], timeout=90)
    out = json.loads(r.stdout or "{}")
    check(out.get("text") == text, f"the Python client with CURVE keys: the same text ({out} {r.stderr[-500:]})")

    r = in_ns("cl", llmctl + ["--curve-server-key", f"{keys}/server.pub", "--curve-client-key",
                              f"{keys}/stranger.key", "health"], timeout=90)
    check(r.returncode == 3 and "refused this client (ZAP status 400)" in r.stderr,
          f"a key the server does not list is refused: rc {r.returncode}: {r.stderr.strip()}")
    r = in_ns("cl", llmctl + ["health"], timeout=90)
    check(r.returncode == 3 and "without CURVE keys" in r.stderr,
          f"a client without CURVE is refused: rc {r.returncode}: {r.stderr.strip()}")
    r = in_ns("cl", py + ["-", "-", PROMPT, "4"], timeout=90)
    out = json.loads(r.stdout or "{}")
    check("without CURVE keys" in out.get("unavailable", ""),
          f"the Python client without keys is refused: {out} {r.stderr[-300:]}")
    check("refused a client from" in job.text(),
          "the server logged the refusal")

    # ----- the gateway on cl: CURVE to h0, API key for HTTP --------------------------------------
    gw_port = 8000
    gw = start("gateway", [args.gateway, "--coordinator", endpoint, "--host", addr["cl"],
                                   "--port", str(gw_port), "--api-key-file", api_keys,
                                   "--curve-server-key", f"{keys}/server.pub",
                                   "--curve-client-key", f"{keys}/gateway.key"], workdir, ns="cl")
    wait_for_state("the gateway listening", lambda: ("listening on" in gw.text(), "not yet"), 60)
    base = f"http://{addr['cl']}:{gw_port}"
    body = json.dumps({"model": "kjv-llama", "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                       "temperature": 0}).encode()
    status_code, resp = http(f"{base}/v1/completions", body, {"Content-Type": "application/json"})
    check(status_code == 401 and "invalid_api_key" in resp, f"gateway without the API key: {status_code} {resp}")
    status_code, resp = http(f"{base}/v1/completions", body, {"Content-Type": "application/json",
                                                              "Authorization": "Bearer wrong-key-0123456789"})
    check(status_code == 401, f"gateway with a wrong API key: {status_code}")
    status_code, resp = http(f"{base}/v1/completions", body, {"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {API_KEY}"},
                             timeout=90)
    check(status_code == 200 and json.loads(resp)["choices"][0]["text"] == text,
          f"gateway with the API key, over CURVE to h0: the same completion ({status_code} {resp[:200]})")

    # What the network saw: the gateway's HTTP in the clear (the capture works), the ZeroMQ
    # traffic of the same prompt and completion only as CURVE ciphertext.
    sniffer.close()
    zmq_bytes = bytes(sniffer.payload.get(5555, b""))
    http_bytes = bytes(sniffer.payload.get(gw_port, b""))
    check(PROMPT.encode() in http_bytes and API_KEY.encode() in http_bytes,
          f"the capture on the bridge reads the plain HTTP to the gateway ({len(http_bytes)} bytes)")
    # Needles of 8 bytes or more: a shorter one turns up in ~90 KB of ciphertext by chance (the
    # completion's first word "Go" once did).
    needles = [PROMPT.encode(), text.strip().encode()[:24], b'"prompt":', b'"type":', b'"delta":']
    leaks = [w for w in needles if len(w) >= 8 and w in zmq_bytes]
    check(len(zmq_bytes) > 10000 and not leaks and b"CURVE" in zmq_bytes[:4096],
          f"ZeroMQ across hosts is CURVE: {len(zmq_bytes)} bytes captured, no prompt, text or JSON in them "
          f"(found: {leaks})")

    # ----- Prometheus: every rank discovered, every worker rank scraped on its host ---------------
    prom = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(expr):
        s, b = http(f"{prom}/query?" + urllib.parse.urlencode({"query": expr}), timeout=10)
        if s != 200:
            return {}
        return {r["metric"].get("instance"): float(r["value"][1]) for r in json.loads(b)["data"]["result"]}

    want_workers = {f"{addr['h0']}:{metrics + 1}", f"{addr['h0']}:{metrics + 2}",
                    f"{addr['h1']}:{metrics + 3}", f"{addr['h1']}:{metrics + 4}"}

    def scraped():
        up = query('up{job="shardserve-worker"}')
        tokens = query('shardserve_worker_tokens_total')
        ok = set(up) == want_workers and all(v == 1 for v in up.values()) and \
            set(tokens) == want_workers and all(v > 0 for v in tokens.values())
        return ok, {"up": up, "tokens": tokens}
    last = wait_for_state("Prometheus scraping every worker rank with tokens computed", scraped, 40)
    check(True, f"Prometheus scraped all 4 worker ranks across both hosts: {last['tokens']}")
    s, b = http(f"{prom}/targets", timeout=10)
    active = json.loads(b)["data"]["activeTargets"]
    coord = [t for t in active if t["labels"].get("job") == "shardserve-coordinator"]
    check(len(coord) == 1 and coord[0]["labels"]["instance"] == f"{addr['h0']}:{metrics}",
          "the coordinator's target discovered on h0's address")
    wait_for_state("the coordinator scraped", lambda: (query('up{job="shardserve-coordinator"}').get(
        f"{addr['h0']}:{metrics}") == 1, "down"), 30)
    log("ok: the coordinator's /metrics scraped")

    # ----- drain ----------------------------------------------------------------------------------
    gw.signal(signal.SIGTERM)
    gw.wait(timeout=30)
    # The coordinator runs on h0 under an orted, not as launch.sh's mpirun's child: signal its pid
    # (docs/deploy.md; a SIGTERM to mpirun also drains, but mpirun then exits 1).
    m = re.search(r"coordinator \(pid (\d+)\)", job.text())
    check(m is not None, "the coordinator logged its pid")
    os.kill(int(m.group(1)), signal.SIGTERM)
    rc = job.wait(timeout=60)
    if rc is None:
        fail("the job did not exit within 60 s of SIGTERM to the coordinator")
    t = job.text()
    check(rc == 0 and "coordinator exits 0" in t,
          f"SIGTERM to the coordinator: the job drained across both hosts, launch.sh exited {rc}")
    log(f"PASS ({time.monotonic() - T0:.0f} s)")


def on_alarm(*_):
    raise Deadline()


def on_term(signum, _):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    T0 = time.monotonic()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.alarm(BUDGET_S)
    code = 0
    try:
        main()
    except Deadline:
        log(f"FAIL: the test ran past its {BUDGET_S} s budget")
        for p in PROCS:
            p.dump()
        code = 1
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # noqa: BLE001 - any failure still cleans up
        log(f"FAIL: {type(e).__name__}: {e}")
        code = 1
    finally:
        signal.alarm(0)
        cleanup()
    sys.exit(code)
