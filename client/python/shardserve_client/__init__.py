"""Python client of shardserve's ZeroMQ protocol (docs/protocol.md), over pyzmq.

    from shardserve_client import Client
    with Client("tcp://127.0.0.1:5555") as c:
        for piece in c.stream(prompt="In the beginning", max_tokens=32, temperature=0):
            print(piece.text, end="", flush=True)
"""
from .client import (PROTOCOL_VERSION, Client, Completion, Delta, ServiceError, Stream,
                     UnavailableError)

__all__ = ["PROTOCOL_VERSION", "Client", "Completion", "Delta", "ServiceError", "Stream",
           "UnavailableError"]
