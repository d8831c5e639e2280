#!/usr/bin/env python3
"""Overload and hostile input end to end, on loopback: a ZeroMQ server (llm-local, or any binary
taking the same flags: --server) with 2 running + 2 waiting requests at most, and the gateway in
front of it with --max-active 4 (issue #21; docs/RELIABILITY.md).
  limits     each over-limit request refused naming its limit: HTTP body (413, --max-body-bytes),
             JSON depth, n, stop strings, logprobs, prompt length at the gateway; JSON depth,
             stop strings, logprobs, frame size on the ZeroMQ socket.
  overload   4 streams hold every gateway slot (one of them a client that never reads): a burst of
             32 gets 429 with Retry-After and an OpenAI error naming --max-active; the ZeroMQ
             front end answers a burst past 2 + 2 live requests "overloaded" with retry_after_s;
             the 4 admitted streams all complete. Then a burst of 24 short requests over HTTP:
             each answer is a full completion or a 429 with Retry-After, and the coordinator's
             counters agree with what the clients saw.
  stalled    a client that stops reading a stream of 4 choices of large events (20 logprobs a
             token): past the gateway's --max-stream-messages 64 its requests are cancelled (the
             coordinator's counters: 4 cancelled, none finished) while it holds the connection.
No timing assertions (bench/overload measures latencies)."""
import argparse
import signal
import http.client
import json
import os
import socket
import sys
import threading
import time

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, fail, run, wait_until  # noqa: E402

MODEL = "kjv-llama"


RESETS = []  # connections the gateway reset instead of answering (retried once; reported)


def http_post(base, path, body, timeout=120, retry=True):
    host, port = base.replace("http://", "").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = r.read()
    except ConnectionResetError:
        if not retry:
            raise
        RESETS.append((path, str(data)[:40]))
        return http_post(base, path, body, timeout, retry=False)
    finally:
        conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, payload


def error_of(status, payload, what):
    try:
        return json.loads(payload)["error"]
    except (ValueError, KeyError):
        fail(f"{what}: HTTP {status} without an OpenAI error body: {payload[:200]!r}")


def zmq_request(sock, message, timeout_ms=10000):
    sock.send(message if isinstance(message, bytes) else json.dumps(message).encode())
    if not sock.poll(timeout_ms):
        fail(f"no answer to {str(message)[:80]}")
    return json.loads(sock.recv_multipart()[-1])


def limits(base, endpoint, ctx):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    c, C = "/v1/chat/completions", "/v1/completions"
    cases = [
        ("--max-body-bytes", 413, None, c, json.dumps(dict(chat, pad="x" * 70000))),
        ("max_json_depth", 400, "json_too_deep", C,
         '{"model":"kjv-llama","prompt":' + "[" * 40 + "]" * 40 + "}"),
        ("max_n", 400, None, c, dict(chat, n=17)),
        ("max_stop_strings", 400, None, c, dict(chat, stop=["s"] * 17)),
        ("max_stop_string_bytes", 400, None, c, dict(chat, stop="s" * 257)),
        ("max_logprobs", 400, None, c, dict(chat, logprobs=True, top_logprobs=21)),
        ("max_model_len", 400, None, C, {"model": MODEL, "prompt": [1] * 5000}),
        ("the context length is", 400, None, C, {"model": MODEL, "prompt": "the " * 3000}),
    ]
    for limit, status, code, path, body in cases:
        st, _, payload = http_post(base, path, body)
        err = error_of(st, payload, limit)
        check(st == status and limit in err["message"] and (code is None or err["code"] == code),
              f"gateway: {limit}: HTTP {st} {err['code']}: {err['message'][:100]}")

    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sub = {"v": 1, "type": "submit", "prompt": "x", "max_tokens": 2}
    cases = [
        ("max_json_depth", "malformed", json.dumps(dict(sub, id="z1"))[:-1] + ',"stop":' + "[" * 40 + "]" * 40 + "}"),
        ("max_stop_strings", "invalid_request", dict(sub, id="z2", stop=["s"] * 17)),
        ("max_stop_string_bytes", "invalid_request", dict(sub, id="z3", stop=["s" * 257])),
        ("max_logprobs", "invalid_request", dict(sub, id="z4", logprobs=21)),
        ("max_prompt_bytes", "invalid_request", dict(sub, id="z5", prompt="p" * ((1 << 20) + 1))),
        ("max_frame_bytes", "malformed", dict(sub, id="z6", prompt="p" * (5 << 20))),
    ]
    for limit, code, message in cases:
        m = zmq_request(sock, message.encode() if isinstance(message, str) else message)
        check(m["type"] == "error" and m["code"] == code and limit in m["message"],
              f"ZeroMQ: {limit}: {m.get('code')}: {m.get('message', '')[:100]}")
    sock.close()


def start_stream(base, max_tokens, read, top_logprobs=0, n=1):
    """A streamed chat completion on a raw socket; with read=False the client never reads."""
    host, port = base.replace("http://", "").split(":")
    s = socket.create_connection((host, int(port)))
    if not read:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me everything."}],
               "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    if top_logprobs:
        request.update(logprobs=True, top_logprobs=top_logprobs)
    if n > 1:
        request["n"] = n
    body = json.dumps(request).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    return s


def read_all(s, out):
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
    out.append(b"".join(chunks))


def overload(base, endpoint, ctx, status):
    # 4 streams take every gateway slot; one never reads.
    readers = [start_stream(base, 1500, True) for _ in range(3)]
    wait_until(lambda: status()["running"] == 2, 30, "2 streams running")
    stalled = start_stream(base, 1500, False)  # waits, then runs: holds a slot and never reads
    wait_until(lambda: status()["live_requests"] == 4, 30, "4 streams live (2 running + 2 waiting)")
    got = []
    threads = [threading.Thread(target=read_all, args=(s, got)) for s in readers]
    for t in threads:
        t.start()

    results = []

    def one(i):
        st, headers, payload = http_post(base, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 4})
        results.append((st, headers, payload))
    burst = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in burst:
        t.start()
    for t in burst:
        t.join()
    ok = all(st == 429 and "retry-after" in h and error_of(st, p, "burst")["code"] == "overloaded"
             and "--max-active" in error_of(st, p, "burst")["message"] for st, h, p in results)
    first = error_of(results[0][0], results[0][2], "burst")["message"]
    check(len(results) == 32 and ok,
          f"a burst of 32 past the gateway's 4 slots: all 429 + Retry-After ({first[:70]})")

    # The ZeroMQ front end: 2 running + 2 waiting are live; 16 more submits are refused at once.
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for i in range(16):
        sock.send(json.dumps({"v": 1, "type": "submit", "id": f"o{i}", "prompt": "x", "max_tokens": 2}).encode())
    answers = []
    while len(answers) < 16:
        if not sock.poll(10000):
            fail(f"only {len(answers)} of 16 overload answers")
        m = json.loads(sock.recv_multipart()[-1])
        if m["type"] != "heartbeat":
            answers.append(m)
    check(all(m["type"] == "error" and m["code"] == "overloaded" and m.get("retry_after_s") for m in answers),
          f"ZeroMQ burst past 2 + 2 live: 16 'overloaded' with retry_after_s ({answers[0]['message'][:70]})")
    sock.close()

    for t in threads:
        t.join(150)
    complete = [b for b in got if b"data: [DONE]" in b and b'"finish_reason":"length"' in b]
    check(len(complete) == 3, "the 3 reading streams completed while the burst was refused")
    stalled.close()  # the client that never read goes away; its request is cancelled
    wait_until(lambda: status()["live_requests"] == 0, 60, "nothing live after the stalled client left")

    # A burst of short requests on an idle service: every answer is a completion or a 429.
    before = status()["counters"]
    results.clear()
    burst = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in burst:
        t.start()
    for t in burst:
        t.join()
    n200 = n429 = 0
    for st, h, p in results:
        if st == 200:
            body = json.loads(p)
            n200 += body["choices"][0]["finish_reason"] in ("length", "stop") and \
                body["usage"]["completion_tokens"] >= 1
        elif st == 429 and "retry-after" in h:
            n429 += 1
    s = wait_until(lambda: (lambda s: s if s["live_requests"] == 0 else None)(status()), 30, "burst done")
    after = s["counters"]
    check(n200 + n429 == 24 and n200 >= 1, f"burst of 24: {n200} completed, {n429} answered 429, nothing else")
    check(after["finished"] - before["finished"] == n200 and s["kv_blocks_used"] == 0,
          f"the coordinator finished exactly the {n200} admitted; KV pool empty")


def stalled_reader_bound(base, status, gw):
    """A client that stops reading a stream of 4 choices whose events are ~1-2 KB (20 logprobs a
    token): ~9 MB in all, more than the loopback socket buffers hold (a send buffer grows to 4 MB
    at most), so the gateway's queue for the stream reaches its --max-stream-messages (64 here)
    and the gateway cancels the 4 requests while the client still holds the connection, holding
    at most 64 of their messages. (Plain 1500-token streams fit the socket buffers: the overload
    step's stalled client never fills the queue.)"""
    before = status()["counters"]
    s = start_stream(base, 1500, False, top_logprobs=20, n=4)
    after = wait_until(lambda: (lambda x: x if x["live_requests"] == 0 and
                                x["counters"]["submitted"] > before["submitted"] else None)(status()),
                       60, "the stalled stream's request ended while its client holds the connection")
    check(after["counters"]["cancelled"] == before["cancelled"] + 4 and
          after["counters"]["finished"] == before["finished"],
          "a stalled reader past --max-stream-messages: its 4 requests cancelled, none finished")
    check("left 64 messages unread" in gw.text(), "the gateway says why it cancelled", gw)
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="llm-local (or a server with its flags)")
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--llmctl", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    srv = Proc("server", [args.server, "--model", args.model, "--listen", "tcp://127.0.0.1:*",
                          "--max-num-seqs", "2", "--max-waiting", "2", "--kv-blocks", "512"], args.workdir)
    endpoint = srv.listening(60)
    gw = Proc("gateway", [args.gateway, "--coordinator", endpoint, "--host", "127.0.0.1", "--port", "0",
                          "--threads", "8", "--max-active", "4", "--max-body-bytes", "65536",
                          "--max-stream-messages", "64"], args.workdir)
    base = gw.listening(60)
    ctl = [args.llmctl, "--endpoint", endpoint, "status", "--json"]
    status = lambda: json.loads(run(ctl, check_rc=0)[1])  # noqa: E731
    ctx = zmq.Context()
    limits(base, endpoint, ctx)
    overload(base, endpoint, ctx, status)
    stalled_reader_bound(base, status, gw)
    gw.signal(signal.SIGTERM)
    check(gw.wait(20) == 0, "the gateway exits 0 on SIGTERM", gw)
    srv.signal(signal.SIGTERM)
    check(srv.wait(20) == 0, "the server exits 0 on SIGTERM", srv)
    print(f"connections reset and retried: {RESETS}")
    print("PASS")


if __name__ == "__main__":
    main()
