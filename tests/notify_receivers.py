#!/usr/bin/env python3
"""The tests' receivers for nmc's notifications: a real SMTP server (aiosmtpd) for e-mail alerts
and an HTTP webhook receiver that checks nmc's webhook signature. Both listen on 127.0.0.1 and
print the line "ready" on stdout once they accept connections; SIGTERM (or SIGINT) stops them
cleanly with exit status 0.

  notify_receivers.py smtp --port P --out DIR [--tls-cert CERT.pem --tls-key KEY.pem]
                           [--auth USER:PASSWORD]
    Each accepted message becomes DIR/<000001>.eml (the DATA as received: CRLF line endings,
    dot-stuffing undone, without the final "."), with DIR/<000001>.json beside it:
    {"mail_from": str, "rcpt_tos": [str], "auth_user": str|null, "tls": bool}. The .json is in
    place before the .eml appears (both written to a dot-name, then renamed), so a reader that
    globs *.eml also finds the .json. Numbering goes on after the files already in DIR.
    With a certificate, STARTTLS is offered; with --auth (needs the certificate) STARTTLS and
    AUTH (PLAIN or LOGIN, only USER:PASSWORD; anything else is 535) are required before MAIL.
    Without --auth no AUTH mechanism is advertised.

  notify_receivers.py http --port P --out FILE --secret SECRET [--fail-first N]
    (paths under /chat/ stand for Teams and Slack: no signature is checked there)
                           [--max-skew-secs 300]
    Any path, POST only (other methods: 405, verdict "method"). The signature scheme:
      Nmc-Timestamp: <unix seconds>
      Nmc-Signature: v1=<lowercase hex HMAC-SHA256(key=SECRET, msg=b"<timestamp>." + body)>
    (see sign()). Verdicts, checked in this order:
      401 "unsigned"      a header missing
      401 "bad_signature" malformed header or wrong HMAC
      401 "stale"         timestamp more than --max-skew-secs away from now
      409 "replay"        this (timestamp, signature) pair passed the checks above before: a
                          retry must be signed afresh
      500 "injected"      the first N requests that got this far (--fail-first N)
      200 "ok"
    The response body is {"status": <verdict>}. Every request is appended to FILE as one JSON
    line before the response is sent: {"path", "status", "verdict", "headers" (lower-case
    names), "body" (parsed JSON, else text), "idempotency_key" (Idempotency-Key or null),
    "duplicate" (an earlier 200 had the same Idempotency-Key), "raw_b64" (the body's bytes, for
    replays), "received_ms" (Unix ms, for latency)}.
"""
import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sign(secret, timestamp, body):
    """The Nmc-Signature header value for a body sent with `Nmc-Timestamp: <timestamp>`."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def wait_for_stop():
    """Says "ready", then blocks until SIGTERM or SIGINT (the server runs in another thread)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(1):  # a timeout, so that the signal handler always gets to run
        pass


def write_atomically(path, data):
    """Writes to a dot-name beside `path`, syncs, then renames: readers never see half a file."""
    directory, name = os.path.split(path)
    temp = os.path.join(directory, "." + name + ".tmp")
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, path)


# ------------------------------------------------------------------------------------------ SMTP


class MailHandler:
    """aiosmtpd handler: stores every message. handle_DATA runs on the controller's single event
    loop thread, so the counter needs no lock."""

    def __init__(self, out):
        self.out = out
        numbers = [int(n[:-4]) for n in os.listdir(out) if re.fullmatch(r"\d+\.eml", n)]
        self.counter = max(numbers, default=0)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # After STARTTLS aiosmtpd advertises "AUTH" even with every mechanism excluded (a bare
        # "250-AUTH "): drop that line. A 5-argument hook must record the HELO name itself.
        session.host_name = hostname
        return [r for r in responses if r.rstrip() != "250-AUTH"]

    async def handle_DATA(self, server, session, envelope):
        self.counter += 1
        base = os.path.join(self.out, f"{self.counter:06d}")
        # session.auth_data: the LoginPassword (bytes) that the authenticator accepted.
        login = session.auth_data.login if session.authenticated else None
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "auth_user": login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
            "tls": session.ssl is not None,  # set by aiosmtpd once STARTTLS completed
        }
        write_atomically(base + ".json", json.dumps(meta).encode() + b"\n")
        # original_content: the bytes after DATA, dot-unstuffed, without the ".\r\n" terminator.
        write_atomically(base + ".eml", envelope.original_content)
        return f"250 OK stored as {self.counter:06d}"


def run_smtp(args):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    # aiosmtpd 1.4 itself sets the deprecated Session.login_data after every AUTH and logs a
    # warning about it to stderr each time: not ours to fix, so not shown.
    logging.getLogger("mail.log").addFilter(lambda r: "login_data" not in r.getMessage())
    os.makedirs(args.out, exist_ok=True)
    kwargs = {"auth_exclude_mechanism": ["PLAIN", "LOGIN"]}  # no AUTH advertised by default
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs["tls_context"] = tls
    if args.auth:
        user, password = (s.encode("utf-8") for s in args.auth.split(":", 1))

        def authenticator(server, session, envelope, mechanism, auth_data):
            # auth_data is a LoginPassword of bytes for the built-in PLAIN and LOGIN.
            ok = (mechanism in ("PLAIN", "LOGIN")
                  and hmac.compare_digest(auth_data.login, user)
                  and hmac.compare_digest(auth_data.password, password))
            # success=False, handled=False makes aiosmtpd answer "535 5.7.8 ... invalid".
            return AuthResult(success=ok, handled=ok, auth_data=auth_data if ok else None)

        kwargs.update(
            auth_exclude_mechanism=[],
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=True,
            require_starttls=True,
        )
    controller = Controller(
        MailHandler(args.out),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="nmc-test-smtp",  # the banner name; the default looks up the FQDN
        **kwargs,
    )
    # start() returns once the server accepted (and answered) a connection of its own.
    controller.start()
    try:
        wait_for_stop()
    finally:
        controller.stop()


# ------------------------------------------------------------------------------------------ HTTP


class WebhookState:
    """What the receiver remembers across requests; only touched under `lock`."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.seen = set()  # (timestamp, signature) pairs that passed signature and skew
        self.failed = 0  # requests answered with an injected 500 so far
        self.ok_keys = set()  # Idempotency-Keys of requests answered 200

    def verdict(self, headers, body, path=""):
        """(HTTP status, verdict) for one POST; updates the replay and failure state. Paths
        under /chat/ stand for Teams and Slack, which take unsigned posts."""
        if path.startswith("/chat/"):
            return self.after_checks()
        timestamp = headers.get("Nmc-Timestamp")
        signature = headers.get("Nmc-Signature")
        if timestamp is None or signature is None:
            return 401, "unsigned"
        if not re.fullmatch(r"\d{1,12}", timestamp) or not hmac.compare_digest(
            signature.encode(), sign(self.args.secret, timestamp, body).encode()
        ):
            return 401, "bad_signature"
        if abs(time.time() - int(timestamp)) > self.args.max_skew_secs:
            return 401, "stale"
        if (timestamp, signature) in self.seen:
            return 409, "replay"
        self.seen.add((timestamp, signature))
        return self.after_checks()

    def after_checks(self):
        """The injected failures, then 200."""
        if self.failed < self.args.fail_first:
            self.failed += 1
            return 500, "injected"
        return 200, "ok"

    def record(self, entry):
        with open(self.args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


class WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real webhook endpoints do
    state = None  # a WebhookState, set in run_http

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:  # the last chunk: then trailer fields up to an empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size + 2)[:size])  # each chunk ends with CRLF
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_request(self):
        body = self.read_body()
        state = self.state
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        key = self.headers.get("Idempotency-Key")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        with state.lock:
            if self.command == "POST":
                status, verdict = state.verdict(self.headers, body, self.path)
            else:
                status, verdict = 405, "method"
            duplicate = key is not None and key in state.ok_keys
            if status == 200 and key is not None:
                state.ok_keys.add(key)
            # Recorded before answering: once the client has its response, the line is there.
            state.record({
                "path": self.path,
                "status": status,
                "verdict": verdict,
                "headers": headers,
                "body": parsed,
                "idempotency_key": key,
                "duplicate": duplicate,
                "raw_b64": base64.b64encode(body).decode(),
                "received_ms": int(time.time() * 1000),
            })
        out = json.dumps({"status": verdict}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = handle_request

    def log_message(self, *args):
        pass


def run_http(args):
    WebhookHandler.state = WebhookState(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), WebhookHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        wait_for_stop()
    finally:
        server.shutdown()
        server.server_close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    smtp = commands.add_parser("smtp", help="SMTP server writing DIR/<n>.eml and <n>.json")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--out", required=True, metavar="DIR")
    smtp.add_argument("--tls-cert", metavar="CERT.pem")
    smtp.add_argument("--tls-key", metavar="KEY.pem")
    smtp.add_argument("--auth", metavar="USER:PASSWORD")
    http = commands.add_parser("http", help="webhook receiver appending JSON lines to FILE")
    http.add_argument("--port", type=int, required=True)
    http.add_argument("--out", required=True, metavar="FILE")
    http.add_argument("--secret", required=True)
    http.add_argument("--fail-first", type=int, default=0, metavar="N")
    http.add_argument("--max-skew-secs", type=float, default=300)
    args = parser.parse_args()
    if args.command == "smtp":
        if bool(args.tls_cert) != bool(args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        if args.auth and not args.tls_cert:
            parser.error("--auth needs --tls-cert/--tls-key (AUTH is only accepted over TLS)")
        if args.auth and ":" not in args.auth:
            parser.error("--auth takes USER:PASSWORD")
        run_smtp(args)
    else:
        run_http(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
