#!/usr/bin/env python3
"""A stand-in for Jaeger where its image cannot be had (docs/operations.md#compose).

It takes OTLP/HTTP (POST /v1/traces, protobuf, optionally gzip) and keeps the spans in
memory, and answers the part of Jaeger's query API that a person or a test asks:

    GET /api/services                      {"data": ["qiao"], ...}
    GET /api/traces/<trace id, hex>        {"data": [{"traceID", "spans", "processes"}]}
    GET /api/traces?service=qiao&limit=20  the newest traces of a service

It is not Jaeger: no UI, no OTLP/gRPC, no storage beyond the newest MAX_SPANS spans. Its
ports are Jaeger's variables: COLLECTOR_OTLP_HTTP_HOST_PORT (:4318) and
QUERY_HTTP_SERVER_HOST_PORT (:16686). Python's standard library only.
"""

import gzip
import json
import os
import signal
import struct
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_SPANS = int(os.environ.get("RECORDER_MAX_SPANS", "10000"))
MAX_BODY = 16 * 1024 * 1024

lock = threading.Lock()
spans = []  # newest last; dicts in Jaeger's JSON shape plus "_service"


class Malformed(Exception):
    pass


def fields(buf):
    """The (number, wire type, value) of each field of one protobuf message."""
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            if i >= n or shift > 63:
                raise Malformed("truncated varint")
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    while i < n:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            if i + 8 > n:
                raise Malformed("truncated fixed64")
            yield number, wire, struct.unpack_from("<Q", buf, i)[0]
            i += 8
        elif wire == 2:
            size = varint()
            if i + size > n:
                raise Malformed("truncated length-delimited field")
            yield number, wire, buf[i : i + size]
            i += size
        elif wire == 5:
            if i + 4 > n:
                raise Malformed("truncated fixed32")
            yield number, wire, struct.unpack_from("<I", buf, i)[0]
            i += 4
        else:
            raise Malformed(f"wire type {wire}")


def any_value(buf):
    for number, wire, v in fields(buf):
        if number == 1 and wire == 2:
            return "string", v.decode("utf-8", "replace")
        if number == 2 and wire == 0:
            return "bool", bool(v)
        if number == 3 and wire == 0:
            return "int64", v - (1 << 64) if v >= 1 << 63 else v
        if number == 4 and wire == 1:
            return "float64", struct.unpack("<d", struct.pack("<Q", v))[0]
    return "string", ""


def key_value(buf):
    key, kind, value = "", "string", ""
    for number, wire, v in fields(buf):
        if number == 1 and wire == 2:
            key = v.decode("utf-8", "replace")
        elif number == 2 and wire == 2:
            kind, value = any_value(v)
    return {"key": key, "type": kind, "value": value}


# OTLP's SpanKind, as Jaeger names it in the span.kind tag.
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def span(buf, service):
    s = {"traceID": "", "spanID": "", "operationName": "", "references": [], "tags": [], "_service": service}
    start = end = 0
    for number, wire, v in fields(buf):
        if number == 1 and wire == 2:
            s["traceID"] = v.hex()
        elif number == 2 and wire == 2:
            s["spanID"] = v.hex()
        elif number == 4 and wire == 2 and v:
            s["_parent"] = v.hex()
        elif number == 5 and wire == 2:
            s["operationName"] = v.decode("utf-8", "replace")
        elif number == 6 and wire == 0 and v in KINDS:
            s["tags"].append({"key": "span.kind", "type": "string", "value": KINDS[v]})
        elif number == 7 and wire == 1:
            start = v
        elif number == 8 and wire == 1:
            end = v
        elif number == 9 and wire == 2:
            s["tags"].append(key_value(v))
        elif number == 15 and wire == 2:
            for n2, w2, code in fields(v):
                if n2 == 3 and w2 == 0 and code == 2:
                    s["tags"].append({"key": "error", "type": "bool", "value": True})
    if len(s["traceID"]) != 32 or len(s["spanID"]) != 16:
        raise Malformed("a span without a 16-byte trace id and an 8-byte span id")
    if "_parent" in s:
        s["references"].append({"refType": "CHILD_OF", "traceID": s["traceID"], "spanID": s.pop("_parent")})
    s["startTime"] = start // 1000
    s["duration"] = max(end - start, 0) // 1000
    return s


def export_request(buf):
    out = []
    for number, wire, resource_spans in fields(buf):
        if number != 1 or wire != 2:
            continue
        service, scope_spans = "unknown_service", []
        for n, w, v in fields(resource_spans):
            if n == 1 and w == 2:
                for n2, w2, kv in fields(v):
                    if n2 == 1 and w2 == 2:
                        attr = key_value(kv)
                        if attr["key"] == "service.name":
                            service = str(attr["value"])
            elif n == 2 and w == 2:
                scope_spans.append(v)
        for scope in scope_spans:
            for n, w, v in fields(scope):
                if n == 2 and w == 2:
                    out.append(span(v, service))
    return out


def trace(trace_id, of):
    """One trace in Jaeger's shape: spans and a process per service."""
    processes, listed = OrderedDict(), []
    for s in of:
        pid = processes.setdefault(s["_service"], f"p{len(processes) + 1}")
        listed.append({k: v for k, v in s.items() if not k.startswith("_")} | {"processID": pid})
    return {
        "traceID": trace_id,
        "spans": listed,
        "processes": {pid: {"serviceName": name, "tags": []} for name, pid in processes.items()},
        "warnings": None,
    }


class Otlp(BaseHTTPRequestHandler):
    def do_POST(self):
        if urlsplit(self.path).path != "/v1/traces":
            return self.answer(404, {"error": "only POST /v1/traces (OTLP/HTTP traces) is taken here"})
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            return self.answer(400, {"error": "content-length is not a number"})
        if length < 0 or length > MAX_BODY:
            return self.answer(413, {"error": f"a body of 0 to {MAX_BODY} bytes is taken"})
        body = self.rfile.read(length)
        try:
            if self.headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            if "protobuf" not in self.headers.get("content-type", ""):
                raise Malformed("only application/x-protobuf is taken (not OTLP/JSON)")
            got = export_request(body)
        except (Malformed, OSError, EOFError) as e:
            return self.answer(400, {"error": str(e)})
        with lock:
            spans.extend(got)
            del spans[: max(len(spans) - MAX_SPANS, 0)]
        # An empty ExportTraceServiceResponse: every span accepted.
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


class Query(Otlp):
    def do_GET(self):
        url = urlsplit(self.path)
        with lock:
            kept = list(spans)
        if url.path == "/api/services":
            names = sorted({s["_service"] for s in kept})
            return self.answer(200, {"data": names, "total": len(names)})
        if url.path.startswith("/api/traces/"):
            wanted = url.path.rsplit("/", 1)[1].lower().rjust(32, "0")
            found = [s for s in kept if s["traceID"] == wanted]
            if not found:
                return self.answer(404, {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]})
            return self.answer(200, {"data": [trace(wanted, found)]})
        if url.path == "/api/traces":
            q = parse_qs(url.query)
            service = q.get("service", [""])[0]
            if not service:
                return self.answer(400, {"data": None, "errors": [{"code": 400, "msg": "parameter 'service' is required"}]})
            try:
                limit = int(q.get("limit", ["20"])[0])
            except ValueError:
                return self.answer(400, {"data": None, "errors": [{"code": 400, "msg": "'limit' is not a number"}]})
            ids = list(OrderedDict.fromkeys(s["traceID"] for s in reversed(kept) if s["_service"] == service))[:limit]
            return self.answer(200, {"data": [trace(t, [s for s in kept if s["traceID"] == t]) for t in ids]})
        return self.answer(404, {"error": "GET /api/services, /api/traces/<id> or /api/traces?service=NAME"})


def listen(variable, default):
    host, _, port = os.environ.get(variable, default).rpartition(":")
    return host or "0.0.0.0", int(port)


def main():
    servers = [
        ThreadingHTTPServer(listen("COLLECTOR_OTLP_HTTP_HOST_PORT", ":4318"), Otlp),
        ThreadingHTTPServer(listen("QUERY_HTTP_SERVER_HOST_PORT", ":16686"), Query),
    ]
    for s in servers:
        sys.stderr.write("otlp-recorder listening on %s:%d\n" % s.server_address[:2])
        threading.Thread(target=s.serve_forever, daemon=True).start()
    # As PID 1 in a container a signal without a handler is ignored: stop on SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Event().wait()


if __name__ == "__main__":
    main()
