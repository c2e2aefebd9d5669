#!/usr/bin/env bash
# Tests/support/ports_free.sh PORT...: exits 1, naming the port, when something on this machine
# already listens on one of the loopback ports a test suite is about to serve on. The suites use
# fixed ports; a second run on the same machine (another checkout's tests) once held one, and the
# suite's requests went to that foreign server (its database, its keys) and failed for nothing.
for port in "$@"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "not ok - port $port on 127.0.0.1 is already in use (another meterctl on this machine?): refusing to test a foreign server" >&2
    exit 1
  fi
done
