#!/usr/bin/env python3
"""The clients against `llm-local` on the llama3-bpe fixture (real ZeroMQ on loopback):
  python  the shardserve_client package (client/python): generate and stream equal to
          transformers' greedy tokens, logprobs, a chat, errors as ServiceError, cancel, control
          messages, and the streaming example;
  llmctl  stream / submit / status / health / model-info / cancel of another process's request,
          bad input (exit 1 with the error), and bench: 100 concurrent requests complete with
          their full outputs, half cancelled mid-stream with the KV pool back to empty.
"""
import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, fail, load_json, run, wait_until  # noqa: E402


def python_client(args, endpoint, ref):
    sys.path.insert(0, os.path.join(args.source, "client", "python"))
    from shardserve_client import Client, ServiceError
    p0 = ref["prompts"][0]
    with Client(endpoint) as c:
        info = c.model_info()
        check(info["name"] == "llama3-bpe" and info["chat_format"] == "llama3", "model_info")
        check(c.health()["status"] == "ok", "health")
        comp = c.generate(prompt_ids=p0["ids"], max_tokens=32, temperature=0, ignore_eos=True)
        check(comp.token_ids == p0["greedy"] and comp.finish_reason == "length", "generate = transformers' greedy")
        s = c.stream(p0["text"], max_tokens=32, temperature=0, logprobs=2)
        deltas = list(s)
        check(len(deltas) > 1 and s.completion.token_ids == p0["greedy"], "stream of the text prompt, same tokens")
        check("".join(d.text for d in deltas) == comp.text == s.completion.text, "streamed text = generated text")
        lps = [lp for d in deltas for lp in d.logprobs]
        check(len(lps) == 32 and all(len(lp["top"]) == 2 for lp in lps), "logprobs: 32 tokens, top 2 each")
        chat = c.generate(messages=[{"role": "system", "content": "You are terse."},
                                    {"role": "user", "content": "Who created the heaven?"}], max_tokens=4)
        check(chat.usage["prompt_tokens"] == 40, "chat rendered with the model's Llama 3 template (40 tokens)")
        try:
            c.generate("x", temperature=-1)
            fail("temperature=-1 accepted")
        except ServiceError as e:
            check(e.code == "invalid_request" and e.field == "temperature", f"ServiceError: {e}")
        long = c.stream(prompt_ids=p0["ids"], max_tokens=400, ignore_eos=True)
        n = 0
        for d in long:
            n += len(d.token_ids)
            if n >= 3 and n < 100:
                long.cancel()
                n = 1000
        check(long.completion.finish_reason == "cancelled", "cancel mid-stream ends the stream 'cancelled'")
        st = wait_until(lambda: (lambda s: s if s["live_requests"] == 0 else None)(c.status()), 10, "idle")
        check(st["kv_blocks_used"] == 0 and st["counters"]["cancelled"] >= 1, "status: idle, KV empty")
    env = dict(os.environ, PYTHONPATH=os.path.join(args.source, "client", "python"))
    example = os.path.join(args.source, "client", "python", "examples", "stream.py")
    import subprocess
    r = subprocess.run([sys.executable, example, "--endpoint", endpoint, "--prompt", "In the beginning",
                        "--max-tokens", "16"], capture_output=True, text=True, timeout=60, env=env)
    check(r.returncode == 0 and r.stdout.startswith("In the beginning") and "16 completion tokens" in r.stderr,
          "examples/stream.py streams a completion")
    r = subprocess.run([sys.executable, example, "--endpoint", endpoint, "--chat", "--prompt", "Hello",
                        "--max-tokens", "8"], capture_output=True, text=True, timeout=60, env=env)
    check(r.returncode == 0 and "8 completion tokens" in r.stderr, "examples/stream.py --chat")


def llmctl(args, endpoint, ref, llm):
    ctl = [args.llmctl, "--endpoint", endpoint]
    p0 = ref["prompts"][0]
    ids = ",".join(map(str, p0["ids"]))
    rc, out, err = run(ctl + ["stream", "--prompt-ids", ids, "--max-tokens", "32", "--temperature", "0", "--json"],
                       check_rc=0)
    msgs = [json.loads(x) for x in out.splitlines()]
    streamed = [t for m in msgs if m["type"] == "delta" for t in m["token_ids"]]
    check(streamed == p0["greedy"] and msgs[-1]["finish_reason"] == "length", "llmctl stream --json")
    rc, out, err = run(ctl + ["submit", "--prompt-ids", ids, "--max-tokens", "32", "--temperature", "0", "--json"],
                       check_rc=0)
    final = [json.loads(x) for x in out.splitlines()][-1]
    check(final["type"] == "final" and final["token_ids"] == p0["greedy"], "llmctl submit --json: one final message")
    rc, out, err = run(ctl + ["submit", "--prompt", "x", "--temperature", "-1"])
    check(rc == 1 and "invalid_request (temperature)" in err, f"llmctl submit with a bad value: {err.strip()}")
    rc, out, err = run(ctl + ["status", "--json"], check_rc=0)
    check(json.loads(out)["type"] == "status", "llmctl status --json")
    run(ctl + ["health"], check_rc=0)
    rc, out, err = run(ctl + ["model-info"], check_rc=0)
    check(json.loads(out)["vocab_size"] == 1000, "llmctl model-info")

    # Cancel another process's request.
    streamer = Proc("llmctl-stream", ctl + ["stream", "--id", "long-one", "--prompt-ids", ids, "--max-tokens", "480",
                                            "--ignore-eos"], args.workdir)
    def listed():
        _, o, _ = run(ctl + ["status", "--requests", "--json"], check_rc=0)
        reqs = json.loads(o).get("requests", [])
        return [r for r in reqs if r["id"] == "long-one" and r["output_tokens"] > 0]
    r = wait_until(listed, 20, "the streaming request is listed")[0]
    rc, out, err = run(ctl + ["cancel", "--id", "long-one", "--client", r["client"]], check_rc=0)
    check("cancelled" in out, f"llmctl cancel --client: {out.strip()}")
    check(streamer.wait(20) == 0 and "[cancelled" in streamer.text(), "the streaming process saw 'cancelled'")

    for name, extra, checks in [
            ("bench100", ["--output-len", "32"], lambda r: r["completed"] == 100 and r["output_tokens"] == 3200),
            ("bench_cancel", ["--output-len", "64", "--cancel-fraction", "0.5", "--cancel-after-tokens", "2"],
             lambda r: r["completed"] == 50 and r["cancelled"] == 50)]:
        path = os.path.join(args.workdir, name + ".json")
        rc, out, err = run(ctl + ["bench", "--num-requests", "100", "--concurrency", "100", "--prompt-len",
                                  "uniform:8:32", "--check", "--json", path] + extra, timeout=120)
        print(out)
        rep = load_json(path)
        check(rc == 0 and rep["ok"] and checks(rep) and rep["kv_blocks_used_after"] == 0,
              f"llmctl bench {' '.join(extra)}: {rep['completed']} complete, {rep['cancelled']} cancelled, KV empty")
        for key in ("ttft_s", "tpot_s", "e2e_s"):
            check(all(k in rep[key] for k in ("p50", "p90", "p99", "mean")), f"report has {key} percentiles")
    check("TTFT" in out and "TPOT" in out and "E2E latency" in out, "the table lists TTFT, TPOT, E2E")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["python", "llmctl"])
    ap.add_argument("--llm-local", required=True)
    ap.add_argument("--llmctl")
    ap.add_argument("--source", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    fixture = os.path.join(args.source, "tests", "fixtures", "llama3-bpe")
    ref = load_json(os.path.join(fixture, "reference.json"))
    llm = Proc("llm-local", [args.llm_local, "--model", fixture, "--listen", "tcp://127.0.0.1:*",
                             "--max-model-len", "512", "--max-num-seqs", "128", "--min-step-ms", "5"], args.workdir)
    endpoint = llm.listening(60)
    if args.which == "python":
        python_client(args, endpoint, ref)
    else:
        llmctl(args, endpoint, ref, llm)
    llm.signal(signal.SIGTERM)
    check(llm.wait(20) == 0, "llm-local exits 0 on SIGTERM", llm)
    print("PASS")


if __name__ == "__main__":
    main()
