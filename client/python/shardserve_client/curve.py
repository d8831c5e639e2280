"""CURVE for the Python client: the same key files as the C++ side (api/curve.h,
docs/deploy.md) and libzmq's own CurveZMQ through pyzmq. A key file holds one Z85 key
(40 characters) on one line, '#' lines are comments; a secret key file must not be readable by
others (nor by a group this process is not in)."""
import os
import stat
from typing import Optional

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

Z85_LENGTH = 40


def read_key_file(path: str, secret: bool) -> bytes:
    """The Z85 key in `path`; ValueError naming the file and the problem."""
    what = f"{'secret' if secret else 'public'} key file {path}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"{what}: {e.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    # As the C++ side (api/curve.h): never readable by others; by a group only if it is ours
    # (Kubernetes' fsGroup, a service's own group).
    if secret and mode & 0o007:
        raise ValueError(f"{what}: readable by others (mode {mode:04o}); it must be private: chmod 600 it")
    if secret and mode & 0o070 and st.st_gid not in set(os.getgroups()) | {os.getegid()}:
        raise ValueError(f"{what}: readable by group {st.st_gid} (mode {mode:04o}), which this process "
                         "is not in; it must be private: chmod 600 it")
    with open(path) as f:
        keys = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
    if len(keys) != 1 or len(keys[0]) != Z85_LENGTH:
        raise ValueError(f"{what}: expected one Z85-encoded CURVE key of {Z85_LENGTH} characters")
    key = keys[0].encode()
    try:
        z85.decode(key)
    except Exception:
        raise ValueError(f"{what}: not Z85") from None
    return key


def apply_client_keys(sock: zmq.Socket, server_key_file: Optional[str],
                      client_key_file: Optional[str]) -> bool:
    """Makes `sock` a CURVE client (before connect); False when both files are None."""
    if not server_key_file and not client_key_file:
        return False
    if not (server_key_file and client_key_file):
        raise ValueError("CURVE needs both the server's public key file and this client's secret key file")
    if not zmq.has("curve"):
        raise ValueError("this libzmq has no CURVE support")
    secret = read_key_file(client_key_file, True)
    sock.curve_serverkey = read_key_file(server_key_file, False)
    sock.curve_secretkey = secret
    sock.curve_publickey = zmq.curve_public(secret)
    return True


HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def describe_failure(monitor: zmq.Socket, endpoint: str, has_curve: bool) -> Optional[str]:
    """Reads one monitor event; the handshake failure it reports, None otherwise."""
    ev = recv_monitor_message(monitor, zmq.NOBLOCK)
    if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (f"the server at {endpoint} refused this client (ZAP status {ev['value']}): its CURVE "
                "public key is not in the server's security.authorized_clients_dir")
    if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if ev["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return (f"the handshake with {endpoint} failed: the server and this client disagree on "
                    "CURVE (one has it on, the other off; a CURVE server refuses clients without "
                    "CURVE keys)")
        return f"the handshake with {endpoint} failed (ZMTP protocol error 0x{ev['value']:08x})"
    if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        hint = ("is the server's public key file the right one?" if has_curve
                else "as a CURVE server does to clients without CURVE keys")
        return (f"the handshake with {endpoint} failed (errno {ev['value']}): the server dropped "
                f"the connection, {hint}")
    return None
