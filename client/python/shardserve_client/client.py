"""The client: one DEALER socket, any number of requests in flight (messages carry the request
id). Not thread-safe: use one Client per thread."""
import itertools
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Union

import zmq

from . import curve

PROTOCOL_VERSION = 1
_CONTROL_TYPES = ("status", "health", "model_info")
_ids = itertools.count(1)


class ServiceError(Exception):
    """An "error" message: code ("invalid_request", "overloaded", ...), the field at fault,
    the message, the request id it concerns and, for "overloaded", when to retry."""

    def __init__(self, message: Dict[str, Any]):
        self.code = message.get("code", "internal")
        self.field = message.get("field")
        self.id = message.get("id")
        self.retry_after_s = message.get("retry_after_s")
        self.message = message.get("message", "")
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{self.code}{where}: {self.message}")


class UnavailableError(ServiceError):
    """The service is unavailable: it did not answer in time, or it answered code "unavailable"
    (a replica failed under the request and none could take it over). The request itself was
    fine: retrying later may succeed."""

    def __init__(self, what: Union[str, Dict[str, Any]]):
        super().__init__(what if isinstance(what, dict) else {"code": "unavailable", "message": what})


def _error(message: Dict[str, Any]) -> ServiceError:
    """An "error" message as its exception: UnavailableError for code "unavailable"."""
    return UnavailableError(message) if message.get("code") == "unavailable" else ServiceError(message)


@dataclass
class Delta:
    """New output of a streamed request."""
    text: str
    token_ids: List[int]
    logprobs: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Completion:
    """A finished request: its whole output, why it ended, usage and timings."""
    id: str
    text: str
    token_ids: List[int]
    finish_reason: str
    finish_detail: str
    usage: Dict[str, int]
    timings: Dict[str, Optional[float]]
    logprobs: List[Dict[str, Any]] = field(default_factory=list)
    stop_string: Optional[str] = None
    stop_token_id: Optional[int] = None


class Stream:
    """Iterates the deltas of one request; afterwards `completion` holds the final message.
    `cancel()` asks the service to stop it (iteration then ends with finish_reason
    "cancelled")."""

    def __init__(self, client: "Client", request_id: str, timeout: float):
        self._client = client
        self.id = request_id
        self._timeout = timeout
        self.accepted: Optional[Dict[str, Any]] = None
        self.completion: Optional[Completion] = None
        self._text: List[str] = []
        self._ids: List[int] = []
        self._logprobs: List[Dict[str, Any]] = []

    def cancel(self) -> None:
        self._client.cancel(self.id)

    def __iter__(self) -> Iterator[Delta]:
        while self.completion is None:
            m = self._client._next_for(self.id, self._timeout)
            kind = m["type"]
            if kind == "accepted":
                self.accepted = m
            elif kind == "delta":
                self._text.append(m.get("text", ""))
                self._ids.extend(m.get("token_ids", []))
                self._logprobs.extend(m.get("logprobs", []))
                yield Delta(m.get("text", ""), m.get("token_ids", []), m.get("logprobs", []))
            elif kind == "final":
                text = m["text"] if "text" in m else "".join(self._text)
                ids = m["token_ids"] if "token_ids" in m else self._ids
                self.completion = Completion(
                    id=self.id, text=text, token_ids=ids, finish_reason=m["finish_reason"],
                    finish_detail=m.get("finish_detail", ""), usage=m.get("usage", {}),
                    timings=m.get("timings", {}), logprobs=m.get("logprobs", self._logprobs),
                    stop_string=m.get("stop_string"), stop_token_id=m.get("stop_token_id"))
            elif kind == "error":
                raise _error(m)


class Client:
    """A connection to a shardserve front end (`endpoint`, e.g. "tcp://127.0.0.1:5555")."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5555", *, context: Optional[zmq.Context] = None,
                 heartbeat_ivl_ms: int = 1000, heartbeat_timeout_ms: int = 5000,
                 curve_server_key_file: Optional[str] = None,
                 curve_client_key_file: Optional[str] = None):
        """CURVE (docs/deploy.md): the server's public key file and this client's secret key
        file; both None: plain ZMTP (a loopback server without CURVE)."""
        self.endpoint = endpoint
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ivl_ms)
        self._socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_timeout_ms)
        self._socket.setsockopt(zmq.HEARTBEAT_TTL, heartbeat_timeout_ms)
        try:
            self._curve = curve.apply_client_keys(self._socket, curve_server_key_file,
                                                  curve_client_key_file)
        except ValueError:
            self._socket.close(0)
            raise
        # Handshake failures (refused key, CURVE on one side only) are raised, not waited out.
        self._monitor = self._socket.get_monitor_socket(curve.HANDSHAKE_FAILURES)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._socket.connect(endpoint)
        self._by_id: Dict[str, deque] = {}
        self._control: Dict[str, deque] = {t: deque() for t in _CONTROL_TYPES}
        self._errors: deque = deque()  # errors without a request id

    # ----- plumbing -----------------------------------------------------------------------
    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(0)
        self._socket.close(0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, message: Dict[str, Any]) -> None:
        """Sends one protocol message ("v" is added)."""
        self._socket.send(json.dumps(dict(message, v=PROTOCOL_VERSION)).encode())

    def receive(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next message from the service (heartbeats skipped), or None after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = dict(self._poller.poll(None if left is None else int(left * 1000)))
            if self._monitor in ready:
                why = curve.describe_failure(self._monitor, self.endpoint, self._curve)
                if why:
                    raise UnavailableError(why)
                continue
            if self._socket not in ready:
                return None
            frames = self._socket.recv_multipart()
            m = json.loads(frames[-1])
            if m.get("type") != "heartbeat":
                return m
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _dispatch(self, m: Dict[str, Any]) -> None:
        kind = m.get("type")
        if kind in _CONTROL_TYPES:
            self._control[kind].append(m)
        elif m.get("id") is not None:
            self._by_id.setdefault(m["id"], deque()).append(m)
        else:
            self._errors.append(m)

    def _next_for(self, request_id: str, timeout: float) -> Dict[str, Any]:
        queue = self._by_id.setdefault(request_id, deque())
        deadline = time.monotonic() + timeout
        while not queue:
            left = deadline - time.monotonic()
            m = self.receive(max(0.0, left)) if left > 0 else None
            if m is None:
                raise UnavailableError(f"no message for request {request_id!r} from {self.endpoint} "
                                       f"within {timeout} s")
            self._dispatch(m)
        m = queue.popleft()
        if m["type"] in ("final", "error") and not queue:
            del self._by_id[request_id]
        return m

    def _request(self, kind: str, message: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        self.send(message)
        deadline = time.monotonic() + timeout
        while not self._control[kind]:
            if self._errors:
                raise _error(self._errors.popleft())
            left = deadline - time.monotonic()
            m = self.receive(left) if left > 0 else None
            if m is None:
                raise UnavailableError(f"no {kind} reply from {self.endpoint} within {timeout} s")
            self._dispatch(m)
        return self._control[kind].popleft()

    # ----- requests -----------------------------------------------------------------------
    def submit(self, prompt: Optional[str] = None, *, prompt_ids: Optional[List[int]] = None,
               messages: Optional[List[Dict[str, str]]] = None, id: Optional[str] = None,
               stream: bool = True, **params: Any) -> str:
        """Sends a submit and returns its request id; read its messages with `stream_of`.
        `params` are the protocol's fields: max_tokens, temperature, top_p, top_k, min_p,
        repetition_penalty, frequency_penalty, presence_penalty, seed, stop, stop_token_ids,
        logprobs, ignore_eos, priority, add_special_tokens, add_generation_prompt."""
        request_id = id or f"py-{os.getpid()}-{next(_ids)}"
        msg: Dict[str, Any] = {"type": "submit", "id": request_id, "stream": stream}
        given = [k for k, v in (("prompt", prompt), ("prompt_ids", prompt_ids), ("messages", messages))
                 if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of prompt, prompt_ids and messages")
        msg[given[0]] = {"prompt": prompt, "prompt_ids": prompt_ids, "messages": messages}[given[0]]
        msg.update(params)
        self.send(msg)
        return request_id

    def stream_of(self, request_id: str, timeout: float = 60.0) -> Stream:
        """The Stream of a request sent with submit()."""
        return Stream(self, request_id, timeout)

    def stream(self, prompt: Optional[str] = None, *, timeout: float = 60.0, **kwargs: Any) -> Stream:
        """Submits a streamed request; iterate the result for its deltas."""
        return self.stream_of(self.submit(prompt, stream=True, **kwargs), timeout)

    def generate(self, prompt: Optional[str] = None, *, timeout: float = 300.0, **kwargs: Any) -> Completion:
        """Submits a request and waits for its whole output."""
        s = self.stream_of(self.submit(prompt, stream=False, **kwargs), timeout)
        for _ in s:
            pass
        return s.completion

    def cancel(self, request_id: str, client: Optional[str] = None) -> None:
        """Asks the service to cancel a live request (another client's with `client`, its hex
        routing id). The request's stream then ends with finish_reason "cancelled"."""
        msg: Dict[str, Any] = {"type": "cancel", "id": request_id}
        if client:
            msg["client"] = client
        self.send(msg)

    # ----- control ------------------------------------------------------------------------
    def status(self, requests: bool = False, timeout: float = 5.0) -> Dict[str, Any]:
        msg: Dict[str, Any] = {"type": "status"}
        if requests:
            msg["requests"] = True
        return self._request("status", msg, timeout)

    def health(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self._request("health", {"type": "health"}, timeout)

    def model_info(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self._request("model_info", {"type": "model_info"}, timeout)
