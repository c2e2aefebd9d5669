"""Hostile input against a running `meterctl serve` (run by Tests/hostile/hostile_test.sh).

Every case is one request a careless or hostile client can send. Each must get a 4xx with a
stable error code, the service must stay up (GET /healthz after each), and a valid event sent in
the same batch as a hostile one must be stored. Prints TAP lines; exits 1 if any case failed.
Only the standard library and `requests` (installed with the Stripe SDK) are used.

Usage: hostile_input.py BASE_URL TOKEN CUSTOMER METER
"""
import gzip
import json
import sys
import time
import uuid

import requests

base, token, customer, meter = sys.argv[1:5]
auth = {"Authorization": f"Bearer {token}"}
json_headers = {**auth, "Content-Type": "application/json"}
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
failures = 0
n = 0


def event(key=None, **extra):
    e = {"customer": customer, "meter": meter, "idempotency_key": key or str(uuid.uuid4()), "occurred_at": now}
    e.update(extra)
    return e


def check(name, response, status, code, field=None):
    """One TAP line: `response` has `status` and error `code` (and `field`), and the service is up."""
    global failures, n
    n += 1
    problems = []
    if response.status_code != status:
        problems.append(f"status {response.status_code}, expected {status}")
    try:
        body = response.json()
    except ValueError:
        body = None
        problems.append(f"body is not JSON: {response.text[:200]!r}")
    if body is not None and code is not None:
        err = body.get("error") or {}
        if err.get("code") != code:
            problems.append(f"code {err.get('code')!r}, expected {code!r} ({response.text[:300]})")
        if field is not None and err.get("field") != field:
            problems.append(f"field {err.get('field')!r}, expected {field!r}")
    health = requests.get(f"{base}/healthz", timeout=10)
    if health.status_code != 200:
        problems.append(f"/healthz answered {health.status_code} afterwards")
    if problems:
        failures += 1
        print(f"not ok {n} - {name}")
        for p in problems:
            print(f"#   {p}")
    else:
        print(f"ok {n} - {name}")


def post(body, headers=json_headers, path="/v1/events"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{base}{path}", data=data, headers=headers, timeout=60)


# Size and shape.
check("a 50 MB body is refused before it is read whole", post(b"[" + b" " * (50 * 1024 * 1024) + b"]"), 413, "body_too_large")
check("100,000 nested brackets are refused, no stack overflow", post("[" * 100_000 + "]" * 100_000), 400, "malformed_json")
check("a lone high surrogate is not JSON", post('{"customer":"\\ud800"}'), 400, "malformed_json")
check("a lone low surrogate is not JSON", post('["\\udc00"]'), 400, "malformed_json")
check("duplicate keys are refused (ambiguous)", post('{"customer":"a","customer":"b"}'), 400, "malformed_json")
check("a raw NUL byte is not JSON", post(b'{"customer":"a\x00"}'), 400, "malformed_json")
check("invalid UTF-8 is not JSON", post(b'{"customer":"\xff\xfe"}'), 400, "malformed_json")
check("an empty body", post(b""), 400, "malformed_json")
check("an empty batch", post([]), 400, "empty_batch")
check("1,001 events in one request", post([event() for _ in range(1001)]), 413, "batch_too_large")

# Fields.
check("an escaped NUL in a string field", post(event(idempotency_key="a\u0000b")), 422, "invalid_value", "idempotency_key")
check("an escaped NUL in a property", post(event(properties={"k": "a\u0000"})), 422, "invalid_value", "properties")
check("a 10,000-character unknown member", post(event(**{"x" * 10_000: 1})), 422, "unknown_field")
check("a 10,000-character property key exceeds the properties limit", post(event(properties={"k" * 10_000: 1})), 422, "too_large", "properties")
check("year 0001", post(event(occurred_at="0001-01-01T00:00:00Z")), 422, "invalid_timestamp", "occurred_at")
check("year 9999", post(event(occurred_at="9999-12-31T23:59:59Z")), 422, "occurred_at_in_future", "occurred_at")
check("a number Postgres cannot store (display scale 16,384)",
      post('{"customer":"%s","meter":"%s","idempotency_key":"%s","occurred_at":"%s","properties":{"n":1.%se-10000}}'
           % (customer, meter, uuid.uuid4(), now, "0" * 6_384)), 422, "invalid_value", "properties")
check("a value of 1e400", post(event(value="1e400")), 422, "invalid_decimal", "value")

# Headers and encodings.
check("no Content-Type", post(event(), headers=auth), 415, "unsupported_media_type", "Content-Type")
check("Content-Type text/plain", post(event(), headers={**auth, "Content-Type": "text/plain"}), 415, "unsupported_media_type")
check("a gzip body (no Content-Encoding is supported)",
      post(gzip.compress(json.dumps(event()).encode()), headers={**json_headers, "Content-Encoding": "gzip"}),
      415, "unsupported_content_encoding", "Content-Encoding")
check("no key", post(event(), headers={"Content-Type": "application/json"}), 401, "unauthorized")
check("a key of 10,000 characters", post(event(), headers={"Authorization": "Bearer " + "k" * 10_000, "Content-Type": "application/json"}), 401, "unauthorized")
check("a cancellation without a key", post({"customer": customer, "idempotency_key": "x"}, headers={"Content-Type": "application/json"},
                                           path="/v1/events/cancel"), 401, "unauthorized")
check("usage with an unknown parameter", requests.get(f"{base}/v1/usage?customer={customer}&x=1", headers=auth, timeout=10), 422, "unknown_parameter", "x")

# Nothing valid sent alongside is lost.
good = event()
mixed = post([good, event(idempotency_key="bad\u0000"), event(occurred_at="0001-01-01T00:00:00Z")])
n += 1
verdicts = mixed.json().get("results", []) if mixed.status_code == 207 else []
if [v.get("status") for v in verdicts] == ["accepted", "rejected", "rejected"]:
    again = post(good)   # the same event again: a duplicate, so it was stored
    if again.status_code == 200 and again.json().get("status") == "duplicate":
        print(f"ok {n} - a valid event beside hostile ones is stored (207; its retry is a duplicate)")
    else:
        failures += 1
        print(f"not ok {n} - the valid event of a mixed batch was not stored: {again.status_code} {again.text[:200]}")
else:
    failures += 1
    print(f"not ok {n} - a mixed batch: {mixed.status_code} {mixed.text[:300]}")

print(f"1..{n}")
sys.exit(1 if failures else 0)
