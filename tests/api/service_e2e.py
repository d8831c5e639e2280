#!/usr/bin/env python3
"""The service end to end on the CPU demo through mpirun:
    mpirun -np 1 coordinator --model models/kjv-llama --listen tcp://127.0.0.1:* : -np 1 worker
(the coordinator without --requests serves ZeroMQ) and over its ZeroMQ front end:
  1. a streamed completion (llmctl stream): several deltas, the text of the in-process `generate`
     tool's greedy completion of the same prompt; its timings carry the queue time (the MPI
     engine reports each request's first step);
  2. 100 concurrent requests from the load generator (llmctl bench --check): all complete with
     their full outputs (every token streamed, finish "length" at max_tokens);
  3. 100 concurrent requests, half cancelled mid-stream: those end "cancelled", the others
     complete, and the KV pool is empty afterwards;
  4. each bad input answered with its error (malformed frame, unknown and mistyped fields, empty
     and over-long prompts, max_tokens beyond the context, out-of-range sampling values, an
     unknown request id), while another client's stream carries on;
  5. past the bounded queue, "overloaded" at once;
  6. a client that vanishes mid-stream has its requests cancelled and its blocks freed;
  7. (with --gateway) the HTTP gateway in front of this coordinator: curl gets a chat completion
     as server-sent events;
  7b. deadlines: 8 long streams with timeout_s = 1 each end finish "timeout" / "deadline" with
     the text they streamed and its usage; the coordinator's Prometheus counter
     shardserve_requests_finished_total{reason="timeout"} counts them; (with --gateway) a gateway
     with --request-timeout 1 passes it down and answers a long request 504 "timeout" (streamed:
     the chunks, then an error event and [DONE]);
  8. SIGTERM mid-stream: the coordinator drains (new submits answered shutting_down), a second
     SIGTERM cancels the stream, the worker is told to exit, and the job exits 0.
Before all that: a batch-only flag without a batch (and a serving flag with one) is a usage
error naming the flag and the mode, and a negative limits.max_request_seconds a configuration
error naming it; the job ends non-zero.
"""
import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, cmake_list, fail, free_port_range, run, scrape_metrics, wait_until  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpiexec", required=True)
    ap.add_argument("--mpiexec-flags", default="")
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--llmctl", required=True)
    ap.add_argument("--generate")
    ap.add_argument("--model", required=True)
    ap.add_argument("--python-client", required=True, help="client/python")
    ap.add_argument("--gateway", help="also check the HTTP gateway in front of the coordinator (needs curl)")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.python_client)
    import zmq
    from shardserve_client import Client, ServiceError

    flags = cmake_list(args.mpiexec_flags)
    for mode_flags, needle in (
            (["--output", os.path.join(args.workdir, "x.jsonl")], "--output applies to a batch"),
            (["--prompt-ids", "1,2", "--listen", "tcp://127.0.0.1:*"], "--listen is a ZeroMQ serving option"),
            (["--max-request-seconds", "-1", "--listen", "tcp://127.0.0.1:*"],
             "limits.max_request_seconds = -1 must be a number of seconds")):
        rc, out, err = run([args.mpiexec, *flags, "-np", "1", args.coordinator, "--model", args.model,
                            "--metrics-port", "0", *mode_flags, ":", "-np", "1", args.worker], timeout=60)
        check(rc != 0 and needle in out + err and "configuration error" in out + err,
              f"{' '.join(mode_flags[:1])}: '{needle}', job status {rc}")
    metrics_port = free_port_range(2)  # the coordinator's, and the worker's (+ 1)
    job = Proc("job", [args.mpiexec, *flags, "-np", "1", args.coordinator, "--model", args.model,
                       "--listen", "tcp://127.0.0.1:*", "--kv-num-blocks", "1024", "--max-num-seqs", "128",
                       "--max-waiting", "8", "--shutdown-grace", "5",
                       "--max-request-seconds", "60", "--stream-idle-timeout", "30",
                       "--metrics-port", str(metrics_port), ":", "-np", "1", args.worker],
               args.workdir)
    endpoint = job.listening(120)
    llmctl = [args.llmctl, "--endpoint", endpoint]
    admin = Client(endpoint)
    info = admin.model_info()
    check(info["name"] == "kjv-llama" and info["max_num_seqs"] == 128, f"model_info from {endpoint}: {info['name']}")
    check(info.get("max_request_seconds") == 60 and info.get("stream_idle_timeout_s") == 30,
          "model_info carries limits.max_request_seconds 60 and limits.stream_idle_timeout_s 30")

    # 1. A streamed completion, as the in-process engine completes it.
    prompt = "And God said unto Moses,"
    rc, out, err = run(llmctl + ["stream", "--prompt", prompt, "--max-tokens", "32", "--temperature", "0", "--json"],
                       timeout=60, check_rc=0)
    msgs = [json.loads(line) for line in out.splitlines() if line.strip()]
    deltas = [m for m in msgs if m["type"] == "delta"]
    final = msgs[-1]
    text = "".join(d["text"] for d in deltas)
    check(msgs[0]["type"] == "accepted" and len(deltas) >= 8 and final["type"] == "final",
          f"streamed over ZeroMQ: accepted, {len(deltas)} deltas, final")
    check(final["finish_reason"] == "length" and final["usage"]["completion_tokens"] == 32
          and sum(len(d["token_ids"]) for d in deltas) == 32, "32 tokens, finish length")
    t = final["timings"]
    check(isinstance(t["queue_s"], float) and 0 <= t["queue_s"] <= t["ttft_s"] <= t["total_s"],
          f"timings: queue {t['queue_s']} <= ttft {t['ttft_s']} <= total {t['total_s']} s")
    if args.generate:
        rc, gen, _ = run([args.generate, "--model", args.model, "--prompt", prompt, "--max-tokens", "32",
                          "--temperature", "0"], timeout=60, check_rc=0)
        check(gen == prompt + text + "\n", "the streamed text is generate's greedy completion")
    rc, plain, _ = run(llmctl + ["stream", "--prompt", prompt, "--max-tokens", "32", "--temperature", "0"],
                       timeout=60, check_rc=0)
    check(plain == text + "\n", "llmctl stream prints the same text")

    # 2. 100 concurrent requests from the load generator, every one to its full output.
    report_path = os.path.join(args.workdir, "bench100.json")
    rc, out, _ = run(llmctl + ["bench", "--num-requests", "100", "--concurrency", "100", "--prompt-len",
                               "uniform:4:12", "--output-len", "12", "--check", "--json", report_path], timeout=120)
    print(out)
    with open(report_path) as f:
        rep = json.load(f)
    check(rc == 0 and rep["ok"] and rep["completed"] == 100 and rep["output_tokens"] == 1200,
          "100 concurrent requests: all complete with their 12 tokens each")
    check(rep["kv_blocks_used_after"] == 0 and rep["ttft_s"]["count"] == 100, "KV pool empty after the run")

    # 3. Half of 100 concurrent requests cancelled mid-stream.
    report_path = os.path.join(args.workdir, "bench_cancel.json")
    rc, out, _ = run(llmctl + ["bench", "--num-requests", "100", "--concurrency", "100", "--prompt-len",
                               "uniform:4:12", "--output-len", "16", "--cancel-fraction", "0.5",
                               "--cancel-after-tokens", "2", "--check", "--json", report_path], timeout=120)
    print(out)
    with open(report_path) as f:
        rep = json.load(f)
    check(rc == 0 and rep["ok"] and rep["cancelled"] == 50 and rep["completed"] == 50,
          "half cancelled mid-stream: 50 cancelled, 50 complete")
    check(rep["kv_blocks_used_after"] == 0, "KV pool back to empty")

    # 4. Each bad input gets its error; another client's stream carries on.
    good = Client(endpoint)
    stream = good.stream("In the beginning", max_tokens=48, temperature=0, ignore_eos=True)
    ctx = zmq.Context()
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(endpoint)

    def sub(**kw):
        return json.dumps(dict({"v": 1, "type": "submit"}, **kw))
    long_prompt = " ".join(["the"] * 3000)
    cases = [
        ([b"{oops"], "malformed", None, None),
        ([b"a", b"b"], "malformed", None, None),
        ([b'{"v":9,"type":"health"}'], "unsupported_version", None, "v"),
        ([sub(id="u1", prompt="x", temprature=0.5).encode()], "invalid_request", "u1", "temprature"),
        ([sub(id="u2", prompt="x", max_tokens="ten").encode()], "invalid_request", "u2", "max_tokens"),
        ([sub(id="u3", prompt="").encode()], "invalid_request", "u3", "prompt"),
        ([sub(id="u4", prompt=long_prompt).encode()], "invalid_request", "u4", "prompt"),
        ([sub(id="u5", prompt="x", max_tokens=5000).encode()], "invalid_request", "u5", "max_tokens"),
        ([sub(id="u6", prompt="x", temperature=-1).encode()], "invalid_request", "u6", "temperature"),
        ([sub(id="u7", prompt="x", top_p=1.5).encode()], "invalid_request", "u7", "top_p"),
        ([sub(id="u8", prompt="x", presence_penalty=9).encode()], "invalid_request", "u8", "presence_penalty"),
        ([sub(id="u9", prompt_ids=[1, 99999]).encode()], "invalid_request", "u9", "prompt_ids[1]"),
        ([b'{"v":1,"type":"cancel","id":"nobody"}'], "unknown_request", "nobody", "id"),
    ]
    for frames, code, rid, fld in cases:
        bad.send_multipart(frames)
        if not bad.poll(10000):
            fail(f"no answer to {frames[0][:60]!r}", job)
        m = json.loads(bad.recv_multipart()[-1])
        check(m["type"] == "error" and m["code"] == code and m["id"] == rid and m["field"] == fld,
              f"{frames[0][:50]!r} -> {m['code']} ({m['field']}): {m['message'][:90]}")
    pieces = [d.text for d in stream]
    check(stream.completion.finish_reason == "length" and len(stream.completion.token_ids) == 48,
          "the other client's stream completed undisturbed")
    bad.close()

    # 5. Overload: 128 running + 8 waiting at most; the rest refused at once.
    flood = Client(endpoint)
    ids = [flood.submit(prompt_ids=[100 + i, 200, 300], max_tokens=300, ignore_eos=True, id=f"f{i}")
           for i in range(150)]
    start = time.monotonic()
    accepted, overloaded = set(), set()
    while len(accepted) + len(overloaded) < 150 and time.monotonic() - start < 20:
        m = flood.receive(1.0)
        if not m:
            continue
        if m["type"] == "accepted":
            accepted.add(m["id"])
        elif m["type"] == "error":
            if m["code"] == "overloaded" and m.get("retry_after_s"):
                overloaded.add(m["id"])
            else:
                fail(f"unexpected error {m}", job)
    elapsed = time.monotonic() - start
    check(len(accepted) == 136 and len(overloaded) == 14 and elapsed < 10,
          f"overload: 136 accepted, 14 'overloaded' with retry_after_s, answered in {elapsed:.2f} s")
    for i in accepted:
        flood.cancel(i)
    ended = set()
    while len(ended) < len(accepted):
        m = flood.receive(30.0)
        if m is None:
            fail("cancelled requests did not end", job)
        if m["type"] == "final":
            ended.add(m["id"])
    check(True, "every accepted request of the flood cancelled")
    flood.close()

    # 6. A client that vanishes mid-stream.
    before = admin.status()["counters"]["disconnect_cancels"]
    ghost = Client(endpoint)
    for i in range(8):
        ghost.submit(prompt_ids=[50 + i, 60, 70], max_tokens=500, ignore_eos=True, id=f"g{i}")
    seen = set()
    while len(seen) < 8:
        m = ghost.receive(30.0)
        if m is None:
            fail("the vanishing client got no deltas", job)
        if m["type"] == "delta":
            seen.add(m["id"])
    ghost.close()
    s = wait_until(lambda: (lambda s: s if s["live_requests"] == 0 else None)(admin.status()), 20,
                   "the vanished client's requests end")
    check(s["counters"]["disconnect_cancels"] - before == 8 and s["kv_blocks_used"] == 0,
          "vanished client: its 8 requests cancelled, KV pool empty")
    good.close()

    # 7. The gateway in front of the MPI coordinator: curl gets SSE.
    if args.gateway:
        gw = Proc("gateway", [args.gateway, "--coordinator", endpoint, "--port", "0"], args.workdir)
        base = gw.listening(60)
        body = json.dumps({"model": "kjv-llama", "stream": True, "max_tokens": 12, "temperature": 0,
                           "messages": [{"role": "user", "content": "Who made the light?"}]})
        rc, out, err = run(["curl", "-sS", "-N", base + "/v1/chat/completions", "-H", "Content-Type: application/json",
                            "--data-binary", body], timeout=60, check_rc=0)
        events = [e for e in out.split("\n\n") if e.strip()]
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        check(all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]" and text
              and chunks[-1]["choices"][0]["finish_reason"] == "length",
              f"gateway -> coordinator: curl gets SSE ({len(chunks)} chunks): {text!r}")
        gw.signal(signal.SIGTERM)
        check(gw.wait(20) == 0, "the gateway exits 0", gw)

    # 7b. Deadlines over ZeroMQ: long streams (to the context length) with timeout_s = 1.
    before = admin.status()["counters"].get("deadline_timeouts", 0)
    timed = Client(endpoint)
    limit = info["max_model_len"] - 8
    streams = [timed.stream("In the beginning", max_tokens=limit, temperature=0, ignore_eos=True,
                            timeout_s=1.0) for _ in range(8)]
    produced = []
    for st in streams:
        text, ids = "", 0
        for d in st:
            text += d.text
            ids += len(d.token_ids)
        c = st.completion
        check(c.finish_reason == "timeout" and c.finish_detail == "deadline",
              f"timeout_s = 1: final {c.finish_reason} / {c.finish_detail}", job)
        check(c.usage["completion_tokens"] == ids < limit and c.timings["total_s"] >= 1.0,
              f"  usage {c.usage['completion_tokens']} = the {ids} tokens streamed, under {limit}; "
              f"total {c.timings['total_s']:.2f} s >= 1")
        produced.append(ids)
    check(any(n > 0 for n in produced), f"the deadline kept the partial output: {produced} tokens")
    timed.close()
    s = wait_until(lambda: (lambda s: s if s["live_requests"] == 0 else None)(admin.status()), 20,
                   "the timed-out requests end")
    check(s["counters"]["deadline_timeouts"] - before == 8 and s["kv_blocks_used"] == 0,
          "8 deadline timeouts counted; KV pool empty")
    expect_timeouts = 8
    if args.gateway:
        gw = Proc("gateway_deadline", [args.gateway, "--coordinator", endpoint, "--port", "0",
                                       "--request-timeout", "1"], args.workdir)
        base = gw.listening(60)
        for stream in (False, True):
            body = json.dumps({"model": "kjv-llama", "stream": stream, "max_tokens": limit, "temperature": 0,
                               "ignore_eos": True, "prompt": "In the beginning"})
            rc, out, err = run(["curl", "-sS", "-N", "-w", "\n%{http_code}", base + "/v1/completions",
                                "-H", "Content-Type: application/json", "--data-binary", body],
                               timeout=60, check_rc=0)
            payload, status = out.rsplit("\n", 1)
            if not stream:
                e = json.loads(payload)["error"]
                check(status == "504" and e["code"] == "timeout" and "--request-timeout" in e["message"],
                      f"gateway --request-timeout 1, not streamed: HTTP {status}, {e['message']!r}", gw)
            else:
                events = [x for x in payload.split("\n\n") if x.strip()]
                last = json.loads(events[-2][6:])
                check(status == "200" and events[-1] == "data: [DONE]" and "error" in last
                      and last["error"]["code"] == "timeout" and len(events) >= 3,
                      f"gateway --request-timeout 1, streamed: {len(events) - 2} chunks, then the "
                      f"error event {last.get('error', {}).get('code')!r} and [DONE]", gw)
        expect_timeouts += 2
        gw.signal(signal.SIGTERM)
        check(gw.wait(20) == 0, "the gateway exits 0", gw)
    # The coordinator's counter, labelled: the engine cancelled them for their deadline.
    def timeouts():
        return scrape_metrics(metrics_port).get('shardserve_requests_finished_total{reason="timeout"}')
    n = wait_until(lambda: (lambda v: v if v == expect_timeouts else None)(timeouts()), 20,
                   f"shardserve_requests_finished_total{{reason=\"timeout\"}} = {expect_timeouts}")
    check(n == expect_timeouts, f"metrics: requests_finished_total{{reason=\"timeout\"}} = {n}")
    admin.close()

    # 8. Shutdown as a service manager does it: SIGTERM to the coordinator (rank 0) while a long
    # stream runs. The drain refuses new submits at once; the second SIGTERM cancels the stream
    # (the grace period is 5 s); then every rank exits 0.
    pid = int(job.wait_for(r"coordinator \(pid (\d+)\)", 10).group(1))
    last = Client(endpoint)
    last.submit(prompt_ids=[11, 12, 13], max_tokens=info["max_model_len"] - 3, ignore_eos=True, id="long")
    m = last.receive(30.0)
    while m is not None and m["type"] != "delta":
        m = last.receive(30.0)
    check(m is not None, "a long stream is running")
    os.kill(pid, signal.SIGTERM)
    job.wait_for("received SIGTERM: draining", 10)
    last.submit(prompt_ids=[1, 2], max_tokens=4, id="late")
    late, final = None, None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and late is None:
        m = last.receive(1.0)
        if m and m.get("id") == "late":
            late = m
        if m and m.get("id") == "long" and m["type"] == "final":
            final = m
    check(late is not None and late["type"] == "error" and late["code"] == "shutting_down",
          f"draining: a new submit is answered {late and late.get('code')}")
    os.kill(pid, signal.SIGTERM)
    while final is None and time.monotonic() < deadline:
        m = last.receive(1.0)
        if m and m.get("id") == "long" and m["type"] == "final":
            final = m
    check(final is not None and final["finish_reason"] == "cancelled",
          f"the second SIGTERM cancels the running stream ({final and final['finish_reason']})")
    last.close()
    rc = job.wait(30)
    check(rc == 0, f"SIGTERM: the job (every rank) exits 0 (got {rc})", job)
    log = job.text()
    check(all(n in log for n in ("received SIGTERM again: cancelling the running requests", "drained:",
                                 "coordinator exits 0", "exiting")),
          "the coordinator drained (its log says so) and the worker exited")
    print("PASS")


if __name__ == "__main__":
    main()
