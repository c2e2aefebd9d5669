"""What the SDK fidelity scripts (Tests/python/stripe_*_fidelity.py) share: checks registered in
order with the context fields they need, a TAP runner, and a local webhook receiver.

Each script registers its checks (`checks = Checks()`, `@checks.add("description", needs=(...))`)
and runs them with `run_checks`: "ok N - ..." or "not ok N - ..." with "# " detail lines, then
"1..N". A check whose prerequisite failed is reported "not ok" without being run; after a
connection error the remaining checks are reported "not ok" without being run, so an unreachable
mock gives one short message, not a storm.
"""

import http.server
import json
import sys
import threading
import time
import traceback


class CheckFailed(Exception):
    """An expectation did not hold; the message is the TAP detail."""


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect_equal(actual, expected, what):
    expect(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


class Checks:
    """Checks in registration order: (description, function(ctx), names of ctx fields needed)."""

    def __init__(self):
        self.items = []

    def add(self, description, needs=()):
        def register(function):
            self.items.append((description, function, needs))
            return function

        return register


def describe_exception(e, script):
    """One line: the exception and the line of `script` it came from. A field missing from a
    response shows up here: StripeObject raises AttributeError or KeyError with the field name."""
    ours = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == script]
    where = f" (line {ours[-1].lineno}: {ours[-1].line})" if ours else ""
    if isinstance(e, (AttributeError, KeyError)):
        return f"a response lacks the field {e}{where}"
    return f"{type(e).__name__}: {e}{where}"


def tap_detail(text):
    for line in str(text).rstrip("\n").splitlines() or [""]:
        print(f"#   {line}")


def run_checks(checks, ctx, script, connection_error, unreachable_text, describe_api_error=None, api_error=None):
    """Runs every check in order and prints TAP; returns the exit status (1 if any failed).

    connection_error: the SDK's connection exception class (the rest is then not run);
    api_error / describe_api_error: the SDK's base error class and how to print one."""
    unreachable = None
    failures = 0
    for number, (description, function, needs) in enumerate(checks.items, 1):
        missing = [name for name in needs if getattr(ctx, name, None) is None]
        detail = None
        if unreachable is not None:
            detail = f"not run: the mock is unreachable ({unreachable})"
        elif missing:
            detail = f"not run: needs {', '.join(missing)} from an earlier check that failed"
        else:
            try:
                function(ctx)
            except CheckFailed as e:
                detail = str(e)
            except connection_error as e:
                unreachable = unreachable_text
                detail = f"{unreachable}: {' '.join(str(getattr(e, 'user_message', None) or e).split())}"
            except Exception as e:  # a response the script cannot digest (or a bug in the script)
                if api_error is not None and isinstance(e, api_error):
                    detail = f"unexpected {describe_api_error(e)}"
                else:
                    detail = describe_exception(e, script)
        if detail is None:
            print(f"ok {number} - {description}")
        else:
            failures += 1
            print(f"not ok {number} - {description}")
            tap_detail(detail)
        sys.stdout.flush()
    print(f"1..{len(checks.items)}")
    if failures:
        print(f"# {failures} of {len(checks.items)} checks failed")
    return 1 if failures else 0


class WebhookReceiver:
    def __init__(self):
        self.deliveries = []  # (body bytes, Stripe-Signature header or None), in arrival order
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self._read_body()
                with receiver.arrived:
                    receiver.deliveries.append((body, self.headers.get("Stripe-Signature")))
                    receiver.arrived.notify_all()
                reply = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _read_body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()  # CRLF after each chunk
                        if size == 0:
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def log_message(self, *args):  # keep TAP output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stripe/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout):
        """The first delivery (body, signature) for which predicate(event dict) holds, or None."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for body, signature in self.deliveries:
                    try:
                        if predicate(json.loads(body)):
                            return body, signature
                    except ValueError:
                        pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.arrived.wait(remaining)
