#!/usr/bin/env python3
"""Protocol-level readiness probes for the local stack (used by scripts/stack.sh).

Each probe sends one real request of the service's own protocol and checks the answer:
  kafka HOST:PORT  -> ApiVersions, then a Metadata request; prints the broker list
  mongo HOST:PORT  -> OP_MSG {ping: 1} on the admin database; checks ok == 1
Exit status 0 when the service answered correctly, 1 otherwise (with the reason on stderr).
Standard library only, so it runs before anything is installed.
"""
import socket
import struct
import sys


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return buf


def _kafka_call(sock, api_key, api_version, correlation_id, body):
    client_id = b"xclog-probe"
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    payload = _recv_exact(sock, size)
    corr = struct.unpack(">i", payload[:4])[0]
    if corr != correlation_id:
        raise ValueError(f"correlation id mismatch: sent {correlation_id}, got {corr}")
    return payload[4:]


def kafka(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        # ApiVersions v0: every broker answers it, so we learn which Metadata versions it serves.
        resp = _kafka_call(sock, 18, 0, 1, b"")
        error = struct.unpack(">h", resp[:2])[0]
        if error != 0:
            raise ValueError(f"ApiVersions error code {error}")
        count = struct.unpack(">i", resp[2:6])[0]
        versions = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i: 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions.get(3, (None, None))
        if lo is None or lo > 8 or hi < 4:
            raise ValueError(f"broker serves Metadata versions {lo}..{hi}, probe speaks 4..8")
        v = max(lo, 4)
        # Metadata v4..v8 (non-flexible): topics = null (all), allow_auto_topic_creation = false,
        # and from v8 two include_*_authorized_operations booleans.
        body = struct.pack(">i", -1) + b"\x00"
        if v >= 8:
            body += b"\x00\x00"
        resp = _kafka_call(sock, 3, v, 2, body)
        off = 4  # throttle_time_ms
        nbrokers = struct.unpack(">i", resp[off:off + 4])[0]
        off += 4
        brokers = []
        for _ in range(nbrokers):
            node_id = struct.unpack(">i", resp[off:off + 4])[0]
            off += 4
            hlen = struct.unpack(">h", resp[off:off + 2])[0]
            off += 2
            bhost = resp[off:off + hlen].decode()
            off += hlen
            bport = struct.unpack(">i", resp[off:off + 4])[0]
            off += 4
            rlen = struct.unpack(">h", resp[off:off + 2])[0]
            off += 2 + max(rlen, 0)
            brokers.append(f"{node_id}@{bhost}:{bport}")
        if not brokers:
            raise ValueError("metadata response lists no broker")
        print("kafka metadata ok: brokers " + ",".join(brokers))


def _bson_doc(items):
    body = b""
    for key, value in items:
        k = key.encode() + b"\x00"
        if isinstance(value, int):
            body += b"\x10" + k + struct.pack("<i", value)
        else:
            s = value.encode() + b"\x00"
            body += b"\x02" + k + struct.pack("<i", len(s)) + s
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def _bson_ok(doc):
    """Returns the numeric `ok` field of a BSON document (double, int32 or int64)."""
    off = 4
    while off < len(doc) - 1:
        etype = doc[off]
        end = doc.index(b"\x00", off + 1)
        name = doc[off + 1:end].decode()
        off = end + 1
        if etype == 0x01:
            val, size = struct.unpack("<d", doc[off:off + 8])[0], 8
        elif etype == 0x10:
            val, size = struct.unpack("<i", doc[off:off + 4])[0], 4
        elif etype == 0x12:
            val, size = struct.unpack("<q", doc[off:off + 8])[0], 8
        elif etype == 0x02:
            val, size = None, 4 + struct.unpack("<i", doc[off:off + 4])[0]
        elif etype in (0x03, 0x04):
            val, size = None, struct.unpack("<i", doc[off:off + 4])[0]
        elif etype == 0x08:
            val, size = None, 1
        elif etype == 0x09 or etype == 0x11:
            val, size = None, 8
        elif etype == 0x0A:
            val, size = None, 0
        else:
            raise ValueError(f"unexpected BSON type 0x{etype:02x} in reply")
        if name == "ok":
            return val
        off += size
    return None


def mongo(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        doc = _bson_doc([("ping", 1), ("$db", "admin")])
        body = struct.pack("<I", 0) + b"\x00" + doc
        header = struct.pack("<iiii", 16 + len(body), 1, 0, 2013)
        sock.sendall(header + body)
        length, _req, resp_to, opcode = struct.unpack("<iiii", _recv_exact(sock, 16))
        rest = _recv_exact(sock, length - 16)
        if opcode != 2013 or resp_to != 1:
            raise ValueError(f"unexpected reply opcode {opcode} / responseTo {resp_to}")
        ok = _bson_ok(rest[5:])
        if ok != 1:
            raise ValueError(f"ping answered ok={ok!r}")
        print("mongo ping ok")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("kafka", "mongo"):
        print("usage: probe.py kafka|mongo HOST:PORT", file=sys.stderr)
        return 2
    try:
        {"kafka": kafka, "mongo": mongo}[sys.argv[1]](sys.argv[2])
        return 0
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"
        print(f"{sys.argv[1]} probe failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
