#!/usr/bin/env python3
"""The deploy manifests against the fields their kinds require, with no cluster (CTest
deploy.manifests). PyYAML (python3-yaml) parses; the checks are ours:

- every document of deploy/kubernetes/*.yaml and deploy/compose/*.yml parses, and each
  Kubernetes object has apiVersion, kind and metadata.name (a DNS-1123 name);
- per kind, the required fields and their types: MPIJob (kubeflow.org/v2beta1: slotsPerWorker,
  mpiReplicaSpecs.Launcher with 1 replica and Worker, each a pod template with containers that
  have name and image; mpiImplementation, cleanPodPolicy, restartPolicy among the allowed
  values), Service (ports with integer port, unique names, a selector), ServiceMonitor
  (monitoring.coreos.com/v1: selector.matchLabels, endpoints naming ports), Deployment (apps/v1:
  selector matching the template's labels), ConfigMap (string data);
- across objects: every volumeMount names a volume; every secret volume holding a secret key is
  not group/other-readable; each Service selects the pods it is for (the MPI Operator's labels on
  worker pods); each ServiceMonitor selects a Service and names ports that Service has; the
  worker ServiceMonitor covers every worker rank (1 .. replicas x tp) on the pod that runs it;
- the ConfigMap's service.toml parses (tomllib), names only settings config/service_config.cc
  knows, serves beyond loopback only with CURVE, and its
  key paths lie under the worker container's mounts; the launcher's launch.sh arguments agree
  with the pods (GPUs per pod = nvidia.com/gpu, slotsPerWorker = GPUs + 1, tp divides the GPUs,
  replicas x tp fit) and with the config; the Service ports equal the config's ports;
- the Dockerfile names the binaries the manifests run, and (--binaries) its runtime stage
  installs the package of every shared library the built executables load; systemd-analyze verify (when present)
  finds nothing in deploy/systemd/*.service beyond the not-installed executables.
"""
import argparse
import glob
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("FAIL: needs PyYAML (Debian package python3-yaml)")
    sys.exit(1)
try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

problems = []
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def get(obj, path, default=None):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj


def need(obj, path, kind, where):
    v = get(obj, path)
    if v is None:
        problem(where, f"missing {path}")
        return None
    if kind is not None and not isinstance(v, kind):
        problem(where, f"{path} must be {kind.__name__ if isinstance(kind, type) else kind}, got {type(v).__name__}")
        return None
    return v


def check_pod_template(tpl, where):
    spec = need(tpl, "spec", dict, where)
    if spec is None:
        return
    containers = need(spec, "containers", list, where)
    volumes = {v.get("name"): v for v in spec.get("volumes", []) or []}
    for v in volumes.values():
        if not any(k in v for k in ("configMap", "secret", "persistentVolumeClaim", "emptyDir",
                                     "hostPath", "projected", "csi")):
            problem(where, f"volume {v.get('name')} has no source")
        sec = v.get("secret")
        if sec is not None and v.get("name", "").endswith(("-server", "gateway-keys")):
            mode = sec.get("defaultMode")
            if mode is None or mode & 0o077:
                problem(where, f"secret volume {v['name']} holds secret keys: defaultMode must be "
                        f"0400 (got {oct(mode) if mode is not None else 'unset'})")
    for i, c in enumerate(containers or []):
        cw = f"{where} container {i}"
        for f in ("name", "image"):
            if not isinstance(c.get(f), str) or not c.get(f):
                problem(cw, f"missing {f}")
        for m in c.get("volumeMounts", []) or []:
            if m.get("name") not in volumes:
                problem(cw, f"volumeMount {m.get('name')} names no volume of the pod")
            if not str(m.get("mountPath", "")).startswith("/"):
                problem(cw, f"volumeMount {m.get('name')}: mountPath must be absolute")
        for p in c.get("ports", []) or []:
            if not isinstance(p.get("containerPort"), int) or not 0 < p["containerPort"] < 65536:
                problem(cw, f"port {p}: containerPort must be an integer in 1..65535")
        for f in ("command", "args"):
            if f in c and not all(isinstance(a, str) for a in c[f]):
                problem(cw, f"{f} must be a list of strings (quote numbers)")


def check_object(doc, where):
    for f in ("apiVersion", "kind"):
        if not isinstance(doc.get(f), str):
            problem(where, f"missing {f}")
    name = get(doc, "metadata.name")
    if not isinstance(name, str) or not DNS1123.match(name) or len(name) > 63:
        problem(where, f"metadata.name {name!r} is not a DNS-1123 label")
    kind = doc.get("kind")
    where = f"{where} ({kind} {name})"
    if kind == "MPIJob":
        if doc.get("apiVersion") != "kubeflow.org/v2beta1":
            problem(where, f"apiVersion must be kubeflow.org/v2beta1, got {doc.get('apiVersion')}")
        spec = need(doc, "spec", dict, where) or {}
        slots = need(spec, "slotsPerWorker", int, where)
        if slots is not None and slots < 1:
            problem(where, "slotsPerWorker must be >= 1")
        if spec.get("mpiImplementation", "OpenMPI") not in ("OpenMPI", "Intel", "MPICH"):
            problem(where, f"mpiImplementation {spec.get('mpiImplementation')} unknown")
        if get(spec, "runPolicy.cleanPodPolicy", "None") not in ("None", "Running", "All"):
            problem(where, "runPolicy.cleanPodPolicy must be None, Running or All")
        if spec.get("launcherCreationPolicy", "AtStartup") not in ("AtStartup", "WaitForWorkersReady"):
            problem(where, "launcherCreationPolicy must be AtStartup or WaitForWorkersReady")
        replicas = need(spec, "mpiReplicaSpecs", dict, where) or {}
        for role in ("Launcher", "Worker"):
            r = replicas.get(role)
            if not isinstance(r, dict):
                problem(where, f"mpiReplicaSpecs.{role} missing")
                continue
            n = r.get("replicas", 1)
            if not isinstance(n, int) or n < 1 or (role == "Launcher" and n != 1):
                problem(where, f"mpiReplicaSpecs.{role}.replicas {n!r} invalid")
            if r.get("restartPolicy", "Never") not in ("Always", "OnFailure", "Never", "ExitCode"):
                problem(where, f"mpiReplicaSpecs.{role}.restartPolicy {r.get('restartPolicy')} invalid")
            tpl = need(r, "template", dict, f"{where} {role}")
            if tpl:
                check_pod_template(tpl, f"{where} {role}")
        for role in replicas:
            if role not in ("Launcher", "Worker"):
                problem(where, f"mpiReplicaSpecs has unknown role {role}")
    elif kind == "Service":
        if doc.get("apiVersion") != "v1":
            problem(where, "apiVersion must be v1")
        ports = need(doc, "spec.ports", list, where) or []
        names = [p.get("name") for p in ports]
        if len(ports) > 1 and (None in names or len(set(names)) != len(names)):
            problem(where, "several ports: each needs a unique name")
        for p in ports:
            if not isinstance(p.get("port"), int) or not 0 < p["port"] < 65536:
                problem(where, f"port {p}: port must be an integer in 1..65535")
            if p.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                problem(where, f"port {p}: protocol invalid")
        need(doc, "spec.selector", dict, where)
    elif kind == "ServiceMonitor":
        if doc.get("apiVersion") != "monitoring.coreos.com/v1":
            problem(where, "apiVersion must be monitoring.coreos.com/v1")
        need(doc, "spec.selector.matchLabels", dict, where)
        eps = need(doc, "spec.endpoints", list, where) or []
        if not eps:
            problem(where, "spec.endpoints is empty")
        for e in eps:
            if not isinstance(e.get("port"), str):
                problem(where, f"endpoint {e}: port (a Service port name) required")
            for r in e.get("relabelings", []) or []:
                if r.get("action", "replace") not in ("replace", "keep", "drop", "labelmap", "labeldrop",
                                                      "labelkeep", "hashmod", "lowercase", "uppercase"):
                    problem(where, f"relabeling action {r.get('action')} invalid")
    elif kind == "Deployment":
        if doc.get("apiVersion") != "apps/v1":
            problem(where, "apiVersion must be apps/v1")
        sel = need(doc, "spec.selector.matchLabels", dict, where) or {}
        labels = get(doc, "spec.template.metadata.labels", {}) or {}
        if any(labels.get(k) != v for k, v in sel.items()):
            problem(where, "spec.selector.matchLabels does not match the template's labels")
        tpl = need(doc, "spec.template", dict, where)
        if tpl:
            check_pod_template(tpl, where)
    elif kind == "ConfigMap":
        data = need(doc, "data", dict, where) or {}
        if not all(isinstance(v, str) for v in data.values()):
            problem(where, "data values must be strings")


def mpi_pod_labels(job, role, index):
    """The labels the MPI Operator (v2) puts on a pod, plus the template's own."""
    labels = dict(get(job, f"spec.mpiReplicaSpecs.{role}.template.metadata.labels", {}) or {})
    labels.update({"training.kubeflow.org/operator-name": "mpi-operator",
                   "training.kubeflow.org/job-name": job["metadata"]["name"],
                   "training.kubeflow.org/job-role": role.lower()})
    if role == "Worker":
        labels["training.kubeflow.org/replica-index"] = str(index)
    return labels


def flag(cmd, name):
    return cmd[cmd.index(name) + 1] if name in cmd and cmd.index(name) + 1 < len(cmd) else None


def cross_check(docs, where, dockerfile, src):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    jobs = by_kind.get("MPIJob", [])
    if len(jobs) != 1:
        problem(where, f"expected one MPIJob, found {len(jobs)}")
        return
    job = jobs[0]
    worker_tpl = get(job, "spec.mpiReplicaSpecs.Worker.template")
    worker_c = get(worker_tpl, "spec.containers")[0]
    launcher_c = get(job, "spec.mpiReplicaSpecs.Launcher.template.spec.containers")[0]
    pods = int(get(job, "spec.mpiReplicaSpecs.Worker.replicas", 1))
    gpus = int(get(worker_c, "resources.limits", {}).get("nvidia.com/gpu", 0))
    cmd = launcher_c.get("command", []) + launcher_c.get("args", [])
    if not cmd or not cmd[0].endswith("deploy/launch.sh"):
        problem(where, f"the launcher must run deploy/launch.sh, runs {cmd[:1]}")
        return
    tp, replicas = int(flag(cmd, "--tp") or 0), int(flag(cmd, "--replicas") or 0)
    if flag(cmd, "--hostfile") != "/etc/mpi/hostfile":
        problem(where, "launch.sh --hostfile must be the operator's /etc/mpi/hostfile")
    if int(flag(cmd, "--gpus-per-node") or -1) != gpus:
        problem(where, f"launch.sh --gpus-per-node {flag(cmd, '--gpus-per-node')} != the worker's nvidia.com/gpu {gpus}")
    if job["spec"]["slotsPerWorker"] != gpus + 1:
        problem(where, f"slotsPerWorker {job['spec']['slotsPerWorker']} must be GPUs + 1 = {gpus + 1} (the coordinator's slot)")
    if tp < 1 or gpus % tp:
        problem(where, f"--tp {tp} must divide the GPUs per pod {gpus}")
    if replicas * tp > pods * gpus:
        problem(where, f"{replicas} replicas x tp {tp} need {replicas * tp} GPUs; {pods} pods x {gpus} have {pods * gpus}")

    # The service configuration.
    cfg = None
    for cm in by_kind.get("ConfigMap", []):
        if "service.toml" in cm.get("data", {}):
            if tomllib is None:
                problem(where, "python3 has no tomllib (3.11+) to parse service.toml")
                break
            try:
                cfg = tomllib.loads(cm["data"]["service.toml"])
            except tomllib.TOMLDecodeError as e:
                problem(where, f"ConfigMap {cm['metadata']['name']} service.toml: {e}")
    if cfg is None:
        problem(where, "no ConfigMap with a service.toml")
        return
    # Every key one the service knows: config/service_config.cc's settings() table.
    known = set(re.findall(r'\{"([a-z_.]+)", "--', open(os.path.join(src, "config", "service_config.cc")).read()))
    for table, value in cfg.items():
        keys = [f"{table}.{k}" for k in value] if isinstance(value, dict) else [table]
        for k in keys:
            if k not in known:
                problem(where, f"service.toml: {k} is not a setting of config/service_config.cc")
    ports = cfg.get("ports", {})
    sec = cfg.get("security", {})
    if cfg.get("tp") != tp or cfg.get("replicas") != replicas:
        problem(where, f"service.toml tp/replicas {cfg.get('tp')}/{cfg.get('replicas')} != launch.sh {tp}/{replicas}")
    if flag(cmd, "--model") != cfg.get("model"):
        problem(where, "launch.sh --model differs from service.toml's model")
    loopback = str(ports.get("host", "127.0.0.1")).startswith("127.")
    if not loopback and not sec.get("curve_secret_key_file") and not sec.get("allow_plaintext"):
        problem(where, "service.toml serves beyond loopback without CURVE ([security] curve_secret_key_file)")
    mounts = [m["mountPath"] for m in worker_c.get("volumeMounts", [])]
    for key in ("curve_secret_key_file", "curve_public_key_file", "authorized_clients_dir"):
        path = sec.get(key)
        if path and not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
            problem(where, f"security.{key} = {path} is under none of the worker's mounts {mounts}")
    for c in (worker_c, launcher_c):
        cfg_path = flag(cmd, "--config")
        if cfg_path not in [m["mountPath"] for m in c.get("volumeMounts", [])]:
            problem(where, f"container {c['name']} does not mount the config at {cfg_path}")

    # Services select their pods; ServiceMonitors select Services and name their ports.
    worker_pods = [mpi_pod_labels(job, "Worker", i) for i in range(pods)]
    deployments = by_kind.get("Deployment", [])
    services = by_kind.get("Service", [])
    for svc in services:
        sel = svc["spec"].get("selector", {})
        matched = [p for p in worker_pods if all(p.get(k) == v for k, v in sel.items())]
        matched += [d for d in deployments
                    if all(get(d, "spec.template.metadata.labels", {}).get(k) == v for k, v in sel.items())]
        if not matched:
            problem(where, f"Service {svc['metadata']['name']} selects no pod")
    zmq_svc = [s for s in services if any(p.get("name") == "zmq" for p in s["spec"]["ports"])]
    if len(zmq_svc) != 1:
        problem(where, "expected one Service with a zmq port")
    else:
        sel = zmq_svc[0]["spec"]["selector"]
        if sel.get("training.kubeflow.org/replica-index") != "0":
            problem(where, "the zmq Service must select worker pod 0 (the coordinator's, world rank 0)")
        zp = {p["name"]: p for p in zmq_svc[0]["spec"]["ports"]}
        if zp["zmq"]["port"] != ports.get("zmq", 5555) or zp.get("metrics", {}).get("port") != ports.get("metrics", 9090):
            problem(where, "the zmq Service's ports differ from service.toml's ports.zmq / ports.metrics")
    base = ports.get("metrics", 9090)
    for sm in by_kind.get("ServiceMonitor", []):
        ml = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in services if all(s["metadata"].get("labels", {}).get(k) == v for k, v in ml.items())]
        if len(targets) != 1:
            problem(where, f"ServiceMonitor {sm['metadata']['name']} selects {len(targets)} Services, expected 1")
            continue
        port_names = {p.get("name"): p for p in targets[0]["spec"]["ports"]}
        for e in sm["spec"]["endpoints"]:
            if e.get("port") not in port_names:
                problem(where, f"ServiceMonitor {sm['metadata']['name']}: port {e.get('port')} is not a port of "
                        f"Service {targets[0]['metadata']['name']}")
        ranks = {}
        for e in sm["spec"]["endpoints"]:
            m = re.match(r"rank-(\d+)$", e.get("port", ""))
            if not m:
                continue
            w = int(m.group(1))
            if port_names[e["port"]]["port"] != base + w:
                problem(where, f"port rank-{w} must be ports.metrics + {w} = {base + w}")
            keep = [r for r in e.get("relabelings", []) if r.get("action") == "keep"]
            ranks[w] = keep[0].get("regex") if keep else None
        if ranks:
            for w in range(1, replicas * tp + 1):
                pod = (w - 1) // gpus  # launch.sh: slots by hostfile order, gpus per pod
                if ranks.get(w) != str(pod):
                    problem(where, f"worker rank {w} runs on pod {pod}; its endpoint keeps pod {ranks.get(w)!r}")
    for d in deployments:
        c = d["spec"]["template"]["spec"]["containers"][0]
        dc = c.get("command", []) + c.get("args", [])
        if dc and dc[0].endswith("/gateway"):
            if flag(dc, "--host") not in (None, "127.0.0.1") and not flag(dc, "--api-key-file"):
                problem(where, "the gateway binds beyond loopback without --api-key-file")
            if sec.get("curve_secret_key_file") and not flag(dc, "--curve-client-key"):
                problem(where, "the front end has CURVE on but the gateway has no --curve-client-key")
            if not (flag(dc, "--coordinator") or "").endswith(f":{ports.get('zmq', 5555)}"):
                problem(where, "the gateway's --coordinator port differs from ports.zmq")
    # The image provides what the pods run.
    # /usr/lib/shardserve is the Dockerfile's /stage: bin/ the installed executables, deploy/ a copy.
    for exe in [cmd[0]] + [d["spec"]["template"]["spec"]["containers"][0]["command"][0] for d in deployments]:
        rel = exe.split("/usr/lib/shardserve/", 1)[-1]
        if rel.startswith("deploy/"):
            ok = "cp -r deploy /stage/deploy" in dockerfile and os.path.exists(os.path.join(src, rel))
        else:
            ok = rel.startswith("bin/") and re.search(rf"/{re.escape(os.path.basename(rel))}\b", dockerfile)
        if not ok:
            problem(where, f"{exe}: the Dockerfile does not install it")


BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}  # in debian:12-slim already


def candidates(path):
    """`path` as dpkg may have registered it (usrmerge: under /lib or /usr/lib)."""
    c = {path, os.path.realpath(path)}
    return c | {("/usr" + x) if x.startswith("/lib") else x.replace("/usr/lib", "/lib", 1) for x in c}


def check_runtime_libraries(binaries, dockerfile):
    """Every shared library the executables load directly comes from a package that the
    runtime stage installs (or the base image has)."""
    runtime = dockerfile.split("AS runtime", 1)[-1]
    wanted = {}  # library path -> the executables that load it
    for exe in binaries:
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                            subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout)
        resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(["ldd", exe], capture_output=True,
                                                                       text=True).stdout, re.M))
        for so in needed:
            if so not in resolved:
                problem("Dockerfile", f"{os.path.basename(exe)} needs {so}, which ldd cannot resolve here")
            else:
                wanted.setdefault(resolved[so], []).append(os.path.basename(exe))
    # One dpkg -S for all (it reads every package's file list each time it runs).
    paths = sorted({c for p in wanted for c in candidates(p)})
    owners = {}
    out = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True, timeout=120).stdout
    for line in out.splitlines():
        pkg, _, path = line.partition(": ")
        owners[path.strip()] = pkg.split(":")[0].strip()
    # CUDA builds load the toolkit's libraries, which on a build machine may come from NVIDIA's
    # installer rather than a package; the runtime stage installs them from NVIDIA's apt
    # repository under these package names.
    cuda_packages = {"libcudart.so": "cuda-cudart-", "libcublas.so": "libcublas-",
                     "libcublasLt.so": "libcublas-", "libnccl.so": "libnccl2"}
    for lib, exes in sorted(wanted.items()):
        pkg = next((owners[c] for c in candidates(lib) if c in owners), None)
        cuda_pkg = next((v for k, v in cuda_packages.items() if os.path.basename(lib).startswith(k + ".")), None)
        if pkg is None and cuda_pkg is not None:
            if cuda_pkg not in runtime:
                problem("Dockerfile", f"{lib} (loaded by {', '.join(exes)}): the runtime stage installs no {cuda_pkg}* package")
            continue
        if pkg is None:
            problem("Dockerfile", f"{lib} (loaded by {', '.join(exes)}) belongs to no Debian package")
        # NVIDIA's packages carry the CUDA version (cuda-cudart-12-6): the Dockerfile's ARG.
        elif pkg not in BASE_IMAGE_PACKAGES and not any(
                re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", runtime)
                for name in (pkg, re.sub(r"-\d+-\d+$", "-${CUDA_VERSION}", pkg))):
            problem("Dockerfile", f"{os.path.basename(lib)} (loaded by {', '.join(sorted(set(exes)))}) comes from package "
                    f"{pkg}, which the runtime stage does not install")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--binaries", nargs="*", default=[],
                    help="built executables: their shared libraries must come from the runtime stage")
    args = ap.parse_args()
    src = args.source_dir
    dockerfile = open(os.path.join(src, "deploy", "docker", "Dockerfile")).read()
    files = sorted(glob.glob(os.path.join(src, "deploy", "kubernetes", "*.yaml")))
    if not files:
        print("FAIL: no deploy/kubernetes/*.yaml")
        return 1
    count = 0
    for path in files:
        rel = os.path.relpath(path, src)
        try:
            docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
        except yaml.YAMLError as e:
            problem(rel, f"YAML: {e}")
            continue
        for i, d in enumerate(docs):
            check_object(d, f"{rel} document {i + 1}")
        count += len(docs)
        cross_check(docs, rel, dockerfile, src)
    for path in sorted(glob.glob(os.path.join(src, "deploy", "compose", "*.yml"))):
        try:
            doc = yaml.safe_load(open(path))
            if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
                problem(os.path.relpath(path, src), "a compose file needs a services mapping")
        except yaml.YAMLError as e:
            problem(os.path.relpath(path, src), f"YAML: {e}")
    if args.binaries:
        check_runtime_libraries(args.binaries, dockerfile)
    units = sorted(glob.glob(os.path.join(src, "deploy", "systemd", "*.service")))
    analyze = "/usr/bin/systemd-analyze"
    if units and os.path.exists(analyze):
        r = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
        for line in (r.stdout + r.stderr).splitlines():
            if line.strip() and "is not executable: No such file or directory" not in line:
                problem("systemd-analyze verify", line)
    if problems:
        print("\n".join(f"FAIL: {p}" for p in problems))
        return 1
    print(f"ok: {count} Kubernetes objects in {len(files)} file(s), compose and {len(units)} systemd unit(s) checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
