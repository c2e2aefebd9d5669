"""A local webhook receiver for the SDK fidelity scripts (Tests/python/stripe_*_fidelity.py).

An HTTP server on 127.0.0.1 (any free port) that records every POST as (body bytes,
Stripe-Signature header or None), in arrival order, and answers 200 {}. The mock sends its
webhooks chunked, so both framings are read.
"""

import http.server
import json
import threading
import time


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
