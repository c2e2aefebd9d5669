"""meter's outgoing webhooks checked by the official Standard Webhooks library (issue 16).

A receiver in this process verifies every request with standardwebhooks.Webhook(secret).verify,
answers 500 to the first delivery of each message and 2xx after, and records what it verified.
Against the scratch database of Tests/cli/cli_test.sh, through meterctl:
  1. `webhooks add` for invoice.closed; a real close emits invoice.closed; `webhooks deliver`:
     the 500 is retried (the delivery stays pending), the next attempt is delivered and verifies,
     with the same webhook-id both times (the receiver's dedup key);
  2. an endpoint that does not answer: dead after the give-up time; `webhooks redrive` sends it
     again and, the endpoint fixed, it is delivered;
  3. `webhooks rotate`: the next message verifies with the new secret and with the old one.
Prints TAP; exits 1 on the first failure. Usage: webhooks_out_check.py METERCTL CONNINFO
"""
import http.server
import json
import subprocess
import sys
import threading

from standardwebhooks.webhooks import Webhook

meterctl, conninfo = sys.argv[1], sys.argv[2]
n = 0


def ok(cond, what):
    global n
    n += 1
    print(("ok %d - " if cond else "not ok %d - ") % n + what, flush=True)
    if not cond:
        sys.exit(1)


def m(*args):
    out = subprocess.run([meterctl, *args, "--log-level", "warning"], env={"DATABASE_URL": conninfo, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    if out.returncode != 0:
        print("# meterctl %s failed: %s" % (" ".join(args), out.stderr.strip()), flush=True)
        sys.exit(1)
    return out.stdout


def sql(q):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", q], capture_output=True, text=True)
    if out.returncode != 0:
        print("# psql failed: %s" % out.stderr.strip(), flush=True)
        sys.exit(1)
    return out.stdout.strip()


secrets = {}          # path -> secrets that must verify
seen = {}             # webhook-id -> attempts received
verified = []         # (path, webhook-id, payload, secret index that verified)


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        msg_id = headers.get("webhook-id")
        good = []
        for i, s in enumerate(secrets.get(self.path, [])):
            try:
                Webhook(s).verify(body, headers)
                good.append(i)
            except Exception:
                pass
        seen[msg_id] = seen.get(msg_id, 0) + 1
        if good:
            verified.append((self.path, msg_id, json.loads(body), good))
        status = 500 if seen[msg_id] == 1 and self.path == "/flaky" else (204 if good else 401)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()


def add(path, types):
    out = m("webhooks", "add", "--url", "http://127.0.0.1:%d%s" % (port, path), *sum([["--event-type", t] for t in types], []))
    eid = int(out.split()[1].rstrip(":"))
    secret = out.strip().splitlines()[-1].split(": ")[-1]
    return eid, secret


def due_now():
    sql("update meter.webhook_deliveries set next_attempt_at = now() where state = 'pending'")


# 1. invoice.closed, a 500 first.
flaky, flaky_secret = add("/flaky", ["invoice.closed"])
secrets["/flaky"] = [flaky_secret]
ok(flaky_secret.startswith("whsec_"), "webhooks add prints a whsec_ signing secret once")
sql("select meter.customer_upsert('wh-out-a'), meter.meter_upsert('wh.out.calls', 'count'), meter.plan_upsert('wh-out-plan', 'usd')")
sql("select meter.plan_price_set('wh-out-plan', 'wh.out.calls', 'per_unit', 3)")
sql("select meter.customer_subscribe('wh-out-a', 'wh-out-plan', '2024-02')")
sql("select * from meter.period_close('2024-02', 'wh-out-a', interval '0')")
out = m("webhooks", "deliver")
ok("1 failed" in out, "the first delivery gets a 500 and is retried later: " + out.strip())
ok(sql("select state || ' ' || attempts from meter.webhook_deliveries where endpoint_id = %d" % flaky) == "pending 1",
   "... it stays pending, after a backoff")
due_now()
out = m("webhooks", "deliver")
ok("1 delivered" in out, "the retry is delivered: " + out.strip())
ok(len(verified) == 2 and all(v[0] == "/flaky" for v in verified), "both attempts verified with standardwebhooks")
ok(verified[0][1] == verified[1][1] and verified[0][1].startswith("msg_"), "the same webhook-id both times (the receiver's dedup key)")
data = verified[1][2]
ok(data["type"] == "invoice.closed" and data["data"]["customer"] == "wh-out-a" and data["data"]["period"] == "2024-02",
   "the body is {type, timestamp, data} with the closed invoice: %s" % json.dumps(data["data"], sort_keys=True)[:120])

# 2. An endpoint that does not answer: dead after the give-up time, re-driven.
sink, sink_secret = add("/down", ["sync.dead_letter"])
sql("select meter.webhook_endpoint_set(%d, 'http://127.0.0.1:9/down')" % sink)   # nothing listens on port 9
sql("select meter._webhook_emit('sync.dead_letter', 'wh-out-test-1', '{\"meter\": \"wh.out.calls\"}')")
out = m("webhooks", "deliver", "--give-up-seconds", "86400")
ok("1 failed" in out and "(0 dead)" in out, "no answer: failed, pending again: " + out.strip())
# (the delivery taken to be two days old, rather than a test that sleeps past a short give-up)
sql("update meter.webhook_deliveries set created_at = now() - interval '2 days', next_attempt_at = now() "
    "where endpoint_id = %d" % sink)
out = m("webhooks", "deliver", "--give-up-seconds", "86400")
ok("(1 dead)" in out, "failing past the give-up time (a day): dead: " + out.strip())
out = m("webhooks", "redrive", "--endpoint", str(sink))
ok(out.startswith("1 dead delivery pending again"), "webhooks redrive: " + out.strip())
sql("select meter.webhook_endpoint_set(%d, 'http://127.0.0.1:%d/down')" % (sink, port))
secrets["/down"] = [sink_secret]
out = m("webhooks", "deliver")
ok("1 delivered" in out and verified[-1][0] == "/down", "re-driven to the fixed endpoint, delivered and verified")

# 3. Rotation: the next message verifies with the new secret and with the old one.
out = m("webhooks", "rotate", str(sink))
new_secret = out.strip().split(": ")[-1]
ok(new_secret.startswith("whsec_") and new_secret != sink_secret, "webhooks rotate prints a new secret")
secrets["/down"] = [new_secret, sink_secret]
sql("select meter._webhook_emit('sync.dead_letter', 'wh-out-test-2', '{\"meter\": \"wh.out.calls\"}')")
out = m("webhooks", "deliver")
ok("1 delivered" in out and verified[-1][3] == [0, 1], "after a rotation both secrets verify the message")
listing = m("webhooks", "list")
ok(sink_secret not in listing and new_secret not in listing and flaky_secret not in listing, "webhooks list shows no secret")
print("1..%d" % n)
