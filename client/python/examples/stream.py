#!/usr/bin/env python3
"""Streams a completion from shardserve to the terminal.

    PYTHONPATH=client/python python3 client/python/examples/stream.py \
        --endpoint tcp://127.0.0.1:5555 --prompt "And God said" --max-tokens 48

With --chat the prompt is sent as a user message (the model's chat template renders it).
Ctrl-C cancels the request (the service frees its KV blocks) and prints the final message.
"""
import argparse
import sys

from shardserve_client import Client, ServiceError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--prompt", default="In the beginning")
    ap.add_argument("--chat", action="store_true", help="send the prompt as a chat user message")
    ap.add_argument("--system", help="with --chat: a system message")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    with Client(args.endpoint) as client:
        info = client.model_info(timeout=args.timeout)
        print(f"[{info['name']}, context {info['max_model_len']} tokens]", file=sys.stderr)
        params = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                      seed=args.seed, timeout=args.timeout)
        if args.chat:
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            messages.append({"role": "user", "content": args.prompt})
            stream = client.stream(messages=messages, **params)
        else:
            print(args.prompt, end="", flush=True)
            stream = client.stream(args.prompt, **params)
        try:
            try:
                for delta in stream:
                    print(delta.text, end="", flush=True)
            except KeyboardInterrupt:
                stream.cancel()
                for delta in stream:  # the rest, up to the "cancelled" final
                    print(delta.text, end="", flush=True)
        except ServiceError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 1
        c = stream.completion
        t = c.timings
        ttft = f"{t['ttft_s'] * 1e3:.1f} ms" if t.get("ttft_s") is not None else "-"
        print(f"\n[{c.finish_reason} ({c.finish_detail}); {c.usage['prompt_tokens']} prompt + "
              f"{c.usage['completion_tokens']} completion tokens; TTFT {ttft}, total "
              f"{t['total_s'] * 1e3:.1f} ms]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
