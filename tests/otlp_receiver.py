#!/usr/bin/env python3
"""A real OTLP receiver for the tests: accepts metrics and traces over HTTP/protobuf
(POST /v1/metrics, /v1/traces) and gRPC (the collector MetricsService and TraceService), decodes
them with the official OpenTelemetry protobuf definitions (PyPI opentelemetry-proto), and appends
each request to OUT as one JSON line: {"signal": "metrics"|"traces", "transport": "http"|"grpc",
"body": <the request as protobuf JSON>}.

Usage: otlp_receiver.py OUT HTTP_PORT GRPC_PORT   (prints "ready" once both listen)
"""
import base64
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

OUT, HTTP_PORT, GRPC_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
LOCK = threading.Lock()


def hex_ids(v):
    """Trace and span ids in hex, as traceparent writes them (protobuf JSON has base64)."""
    if isinstance(v, dict):
        return {
            k: base64.b64decode(x).hex() if k in ("traceId", "spanId", "parentSpanId") and isinstance(x, str) else hex_ids(x)
            for k, x in v.items()
        }
    if isinstance(v, list):
        return [hex_ids(x) for x in v]
    return v


def record(signal, transport, message):
    body = hex_ids(MessageToDict(message))
    line = json.dumps({"signal": signal, "transport": transport, "body": body})
    with LOCK, open(OUT, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class Http(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kinds = {
            "/v1/metrics": ("metrics", mpb.ExportMetricsServiceRequest, mpb.ExportMetricsServiceResponse),
            "/v1/traces": ("traces", tpb.ExportTraceServiceRequest, tpb.ExportTraceServiceResponse),
        }
        if self.path not in kinds:
            self.send_response(404)
            self.end_headers()
            return
        signal, request, response = kinds[self.path]
        message = request()
        message.ParseFromString(body)
        record(signal, "http", message)
        out = response().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class Metrics(mgrpc.MetricsServiceServicer):
    def Export(self, request, context):
        record("metrics", "grpc", request)
        return mpb.ExportMetricsServiceResponse()


class Traces(tgrpc.TraceServiceServicer):
    def Export(self, request, context):
        record("traces", "grpc", request)
        return tpb.ExportTraceServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    mgrpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    tgrpc.add_TraceServiceServicer_to_server(Traces(), server)
    server.add_insecure_port(f"127.0.0.1:{GRPC_PORT}")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Http)
    print("ready", flush=True)
    http.serve_forever()


if __name__ == "__main__":
    main()
