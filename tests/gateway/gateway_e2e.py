#!/usr/bin/env python3
"""The OpenAI-compatible gateway end to end: `llm-local` (the demo model kjv-llama, served over
ZeroMQ in one process) + `gateway` (HTTP on 127.0.0.1), then
  curl    curl gets server-sent events from /v1/chat/completions and /v1/completions (data: ...
          then data: [DONE]); /health, /ready, /v1/models; n > 1, logprobs, seed, stop; usage;
          every bad request answered with an OpenAI-shaped error; 429 with Retry-After past the
          queue; an HTTP client that goes away mid-stream has its requests cancelled.
  openai  the official `openai` npm client (run by node) lists the models, streams a chat
          completion, makes a completion with n=2, and gets an APIError for a bad value.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, fail, run, wait_until  # noqa: E402

MODEL = "kjv-llama"


def curl(base, path, body=None, extra=(), timeout=60):
    cmd = ["curl", "-sS", "-N", "-D", "-", base + path] + list(extra)
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary",
                body if isinstance(body, str) else json.dumps(body)]
    rc, out, err = run(cmd, timeout=timeout)
    if rc != 0:
        fail(f"curl {path} failed ({rc}): {err}")
    head, _, payload = out.partition("\n\n")  # (text mode: CRLF already became LF)
    status = int(head.split()[1])
    headers = {}
    for line in head.split("\n")[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, payload


def sse_events(payload):
    events = [e for e in payload.split("\n\n") if e.strip()]
    for e in events:
        if not e.startswith("data: "):
            fail(f"not an SSE data event: {e[:200]!r}")
    return [e[len("data: "):] for e in events]


def expect_error(base, path, body, status, param=None, code=None, what=""):
    st, headers, payload = curl(base, path, body)
    try:
        err = json.loads(payload)["error"]
    except (ValueError, KeyError):
        fail(f"{what}: not an OpenAI error body: {payload[:300]}")
    ok = st == status and set(err) == {"message", "type", "param", "code"} and (param is None or err["param"] == param)
    ok = ok and (code is None or err["code"] == code)
    check(ok, f"{what}: HTTP {st} {err['type']} param={err['param']} code={err['code']}: {err['message'][:80]}")
    return headers, err


def curl_mode(args, base, endpoint):
    st, _, body = curl(base, "/health")
    check(st == 200 and json.loads(body)["status"] == "ok", "GET /health")
    st, _, body = curl(base, "/ready")
    check(st == 200 and json.loads(body)["status"] == "ready", "GET /ready")
    st, _, body = curl(base, "/v1/models")
    check(st == 200 and json.loads(body)["data"][0]["id"] == MODEL, "GET /v1/models")
    expect_error(base, "/v1/models/nope", None, 404, code="model_not_found", what="GET /v1/models/nope")

    # Chat, streamed: curl gets SSE.
    st, headers, payload = curl(base, "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "Who made the light?"}], "max_tokens": 16,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(payload)
    check(st == 200 and headers.get("content-type", "").startswith("text/event-stream"), "chat stream: 200 text/event-stream")
    check(events[-1] == "[DONE]", "chat stream ends with data: [DONE]")
    chunks = [json.loads(e) for e in events[:-1]]
    check(chunks[0]["choices"][0]["delta"].get("role") == "assistant", "first chunk: the assistant role")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    check(len(chunks) > 5 and text and finish == ["length"], f"chat stream: {len(chunks)} chunks, text {text!r}")
    check(chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16,
          "include_usage: a last chunk with the usage")
    check(all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks), "chunk shape")

    # Completions, streamed.
    st, headers, payload = curl(base, "/v1/completions", {"model": MODEL, "prompt": "In the beginning",
                                                          "max_tokens": 8, "stream": True, "temperature": 0})
    events = sse_events(payload)
    chunks = [json.loads(e) for e in events[:-1]]
    stream_text = "".join(c["choices"][0]["text"] for c in chunks)
    check(events[-1] == "[DONE]" and chunks[0]["object"] == "text_completion", "completions stream over SSE")

    # Non-streamed: the same greedy text; n=2 with logprobs and a seed, reproducibly.
    st, _, body = curl(base, "/v1/completions", {"model": MODEL, "prompt": "In the beginning", "max_tokens": 8,
                                                 "temperature": 0})
    r = json.loads(body)
    check(st == 200 and r["choices"][0]["text"] == stream_text and r["usage"]["completion_tokens"] == 8,
          "completion = the streamed completion; usage")
    req = {"model": MODEL, "prompt": "And God said", "max_tokens": 8, "n": 2, "logprobs": 2, "seed": 11}
    st, _, body = curl(base, "/v1/completions", req)
    r1 = json.loads(body)
    check(st == 200 and len(r1["choices"]) == 2 and r1["usage"]["completion_tokens"] == 16, "n=2: two choices")
    lp = r1["choices"][0]["logprobs"]
    check(len(lp["tokens"]) == 8 and len(lp["top_logprobs"][0]) <= 2 and len(lp["text_offset"]) == 8, "logprobs")
    st, _, body = curl(base, "/v1/completions", req)
    check([c["text"] for c in json.loads(body)["choices"]] == [c["text"] for c in r1["choices"]],
          "the same seed gives the same choices")
    st, _, body = curl(base, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                                      "max_tokens": 4, "logprobs": True, "top_logprobs": 2})
    r = json.loads(body)
    check(st == 200 and r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
          and len(r["choices"][0]["logprobs"]["content"]) == 4, "chat completion with logprobs")

    # stop: a word of the greedy text ends it there.
    st, _, body = curl(base, "/v1/completions", {"model": MODEL, "prompt": "And God said", "max_tokens": 24,
                                                 "temperature": 0})
    full = json.loads(body)["choices"][0]["text"]
    words = [w for w in full.split() if w.isalpha() and len(w) > 2]
    word = next(w for w in words[2:] + words if full.find(w) > 0)
    st, _, body = curl(base, "/v1/completions", {"model": MODEL, "prompt": "And God said", "max_tokens": 24,
                                                 "temperature": 0, "stop": [word]})
    c = json.loads(body)["choices"][0]
    check(c["finish_reason"] == "stop" and c["text"] == full[:full.find(word)], f"stop {word!r}")

    # Errors: OpenAI-shaped, with the parameter named.
    expect_error(base, "/v1/chat/completions", "{not json", 400, what="invalid JSON")
    expect_error(base, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                                "colour": 1}, 400, param="colour", what="unknown field")
    expect_error(base, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                                "temperature": 5}, 400, param="temperature", what="temperature 5")
    expect_error(base, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 5000}, 400,
                 param="max_tokens", code="invalid_request", what="max_tokens beyond the context")
    expect_error(base, "/v1/completions", {"model": MODEL, "prompt": ""}, 400, param="prompt", what="empty prompt")
    expect_error(base, "/v1/completions", {"model": MODEL, "prompt": "x", "top_p": 0}, 400, param="top_p",
                 what="top_p 0")
    expect_error(base, "/v1/chat/completions", {"model": MODEL, "messages": []}, 400, param="messages",
                 what="no messages")
    expect_error(base, "/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, param="model",
                 code="model_not_found", what="another model")
    expect_error(base, "/v1/nothing", None, 404, what="unknown path")

    # Past the queue: 429 with Retry-After. Two long streams fill it (2 running, 0 waiting).
    long_body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Tell me everything."}],
                            "max_tokens": 1500, "ignore_eos": True, "stream": True})
    hogs = [subprocess.Popen(["curl", "-sS", "-N", base + "/v1/chat/completions", "-H",
                              "Content-Type: application/json", "--data-binary", long_body],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    ctl = [args.llmctl, "--endpoint", endpoint, "status", "--json"]
    status = lambda: json.loads(run(ctl, check_rc=0)[1])  # noqa: E731
    wait_until(lambda: status()["running"] == 2, 30, "two streams running")
    t0 = time.monotonic()
    headers, err = expect_error(base, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 4}, 429,
                                code="overloaded", what="overloaded")
    check("retry-after" in headers and time.monotonic() - t0 < 5, f"429 at once, Retry-After: {headers.get('retry-after')}")
    before = status()["counters"]["cancelled"]
    for h in hogs:  # the HTTP clients go away mid-stream
        h.kill()
        h.wait()
    s = wait_until(lambda: (lambda s: s if s["live_requests"] == 0 else None)(status()), 20,
                   "the abandoned streams end")
    check(s["counters"]["cancelled"] - before == 2 and s["kv_blocks_used"] == 0,
          "HTTP clients that left mid-stream: their requests cancelled, KV empty")


def openai_mode(args, base):
    env = dict(os.environ, NODE_PATH=args.node_modules)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openai_client.cjs")
    r = subprocess.run([args.node, script, base + "/v1", MODEL], capture_output=True, text=True, timeout=120, env=env)
    if r.returncode != 0:
        fail(f"the openai client failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    check(out["models"] == [MODEL], f"openai {out.get('version')}: models.list()")
    check(out["chunks"] > 5 and out["role"] == "assistant" and out["text"] and out["finish_reason"] == "length",
          f"openai: streamed chat completion of {out['chunks']} chunks: {out['text']!r}")
    check(out["object"] == "chat.completion.chunk" and out["usage"]["completion_tokens"] == 24, "openai: usage chunk")
    check(len(out["completion"]["choices"]) == 2 and out["completion"]["usage"]["completion_tokens"] == 16,
          "openai: completions.create(n=2)")
    check(out["error"] and out["error"]["status"] == 400 and out["error"]["param"] == "temperature",
          f"openai: APIError {out['error']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["curl", "openai"])
    ap.add_argument("--llm-local", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--llmctl", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--node", default="node")
    ap.add_argument("--node-modules")
    args = ap.parse_args()
    if args.mode == "openai" and not os.path.exists(os.path.join(args.node_modules or "", "openai", "package.json")):
        print(f"SKIP: the openai npm package is not in {args.node_modules} (gateway.npm_install_openai skipped)")
        sys.exit(77)
    llm = Proc("llm-local", [args.llm_local, "--model", args.model, "--listen", "tcp://127.0.0.1:*",
                             "--max-num-seqs", "2", "--max-waiting", "0", "--kv-blocks", "512"], args.workdir)
    endpoint = llm.listening(60)
    gw = Proc("gateway", [args.gateway, "--coordinator", endpoint, "--host", "127.0.0.1", "--port", "0",
                          "--threads", "8"], args.workdir)
    base = gw.listening(60)
    if args.mode == "curl":
        curl_mode(args, base, endpoint)
    else:
        openai_mode(args, base)
    gw.signal(signal.SIGTERM)
    check(gw.wait(20) == 0, "the gateway exits 0 on SIGTERM", gw)
    llm.signal(signal.SIGTERM)
    check(llm.wait(20) == 0, "llm-local exits 0 on SIGTERM", llm)
    print("PASS")


if __name__ == "__main__":
    main()
