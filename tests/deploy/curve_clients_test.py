#!/usr/bin/env python3
"""The clients with CURVE against `llm-local` (CTest deploy.curve_clients; real ZeroMQ on
loopback, runs anywhere, no root): the server's [security] section from a service config file,
keys made by `llmctl keygen`.
  - llmctl and the Python client with an authorized key get the greedy completion that a plain
    (CURVE-less) llm-local gives for the same prompt;
  - a key the server does not list, and a client without CURVE, are refused by both clients with
    errors naming the cause (llmctl exits 3);
  - a client's .pub added to the directory lets it in at its next connection, no restart;
  - a secret key file readable by others is refused before connecting;
  - a config naming a secret key but no clients' directory stops llm-local with the setting named.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, run  # noqa: E402

PROMPT = "In the beginning"


def main():
    ap = argparse.ArgumentParser()
    for a in ("--llm-local", "--llmctl", "--model", "--source", "--workdir"):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    keys = os.path.join(args.workdir, "keys")
    clients = os.path.join(keys, "clients")
    os.makedirs(clients)
    for who in ("server", "ops", "late"):
        run([args.llmctl, "keygen", os.path.join(keys, who)], check_rc=0)
    shutil.copy(os.path.join(keys, "ops.pub"), clients)
    rc, _, err = run([args.llmctl, "keygen", os.path.join(keys, "ops")])
    check(rc != 0 and "never overwritten" in err, f"keygen refuses to overwrite a key: {err.strip()}")

    config = os.path.join(args.workdir, "security.toml")
    with open(config, "w") as f:
        f.write(f'[security]\ncurve_secret_key_file = "{keys}/server.key"\n'
                f'curve_public_key_file = "{keys}/server.pub"\nauthorized_clients_dir = "{clients}"\n')
    bad = os.path.join(args.workdir, "bad.toml")
    with open(bad, "w") as f:
        f.write(f'[security]\ncurve_secret_key_file = "{keys}/server.key"\n')
    rc, out, err = run([args.llm_local, "--model", args.model, "--config", bad], timeout=60)
    check(rc != 0 and "security.authorized_clients_dir is not" in out + err,
          "a secret key without the clients' directory is a start-up error naming the setting")

    common = ["--model", args.model, "--listen", "tcp://127.0.0.1:*"]
    plain = Proc("plain", [args.llm_local] + common, args.workdir)
    secure = Proc("secure", [args.llm_local] + common + ["--config", config], args.workdir)
    plain_ep, ep = plain.listening(), secure.listening()
    check("CURVE on" in secure.text(), "llm-local: CURVE on from the [security] section")
    gen = ["stream", "--prompt", PROMPT, "--max-tokens", "16", "--temperature", "0"]
    rc, reference, _ = run([args.llmctl, "--endpoint", plain_ep] + gen, timeout=60, check_rc=0)

    def llmctl(who, *rest, server_key=True):
        flags = []
        if who:
            flags = ["--curve-server-key", f"{keys}/server.pub", "--curve-client-key", f"{keys}/{who}.key"]
        return run([args.llmctl, "--endpoint", ep, "--timeout", "20"] + flags + list(rest), timeout=60)

    rc, out, err = llmctl("ops", *gen)
    check(rc == 0 and out == reference, f"llmctl with an authorized key: the same text ({out!r})")
    rc, out, err = llmctl("late", "health")
    check(rc == 3 and "refused this client (ZAP status 400)" in err, f"llmctl with an unlisted key: {err.strip()}")
    rc, out, err = run([args.llmctl, "--endpoint", ep, "--timeout", "20", "health"], timeout=60)
    check(rc == 3 and "without CURVE keys" in err, f"llmctl without CURVE: {err.strip()}")
    check("refused a client from" in secure.text(), "the server logged the refusal")

    sys.path.insert(0, os.path.join(args.source, "client", "python"))
    from shardserve_client import Client, UnavailableError
    with Client(ep, curve_server_key_file=f"{keys}/server.pub", curve_client_key_file=f"{keys}/ops.key") as c:
        text = c.generate(PROMPT, max_tokens=16, temperature=0).text
    check(text + "\n" == reference, f"Python client with an authorized key: the same text ({text!r})")
    for kw, why in (({}, "without CURVE keys"),
                    ({"curve_server_key_file": f"{keys}/server.pub", "curve_client_key_file": f"{keys}/late.key"},
                     "refused this client")):
        try:
            with Client(ep, **kw) as c:
                c.health(timeout=20)
            check(False, "a refused Python client got an answer")
        except UnavailableError as e:
            check(why in str(e), f"Python client refused: {e}")

    shutil.copy(os.path.join(keys, "late.pub"), clients)
    rc, out, err = llmctl("late", "health")
    check(rc == 0 and out.startswith("ok"), "a .pub added to the directory is let in at once (no restart)")

    os.chmod(os.path.join(keys, "late.key"), 0o644)
    rc, out, err = llmctl("late", "health")
    check(rc != 0 and "readable by others (mode 0644)" in err, f"a readable secret key is refused: {err.strip()}")
    try:
        Client(ep, curve_server_key_file=f"{keys}/server.pub", curve_client_key_file=f"{keys}/late.key")
        check(False, "the Python client took a readable secret key")
    except ValueError as e:
        check("readable by others (mode 0644)" in str(e), f"the Python client refuses it too: {e}")

    secure.signal(2)
    plain.signal(2)
    check(secure.wait(30) == 0 and plain.wait(30) == 0, "both servers exit 0 on SIGINT")
    print(json.dumps({"result": "pass"}))


if __name__ == "__main__":
    main()
