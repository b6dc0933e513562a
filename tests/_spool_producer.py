"""A process that makes tracks as fast as it can through a spool (run by the spool and fleet tests).

Usage: python _spool_producer.py SPOOL BASE_URL API_KEY COUNT NAME MODE

MODE `deliver`: the process delivers what it commits; prints `made N` after every
100 messages made (not yet committed). MODE `commit`: it only commits (a fleet's
relays deliver); prints `made N` each time N are committed (every 250, after a
flush). MODE `hold`: as `deliver`, one request at a time, with a lease of
`HOLD_LEASE` seconds (a test stops it with SIGSTOP past its lease). Then `done` once
all are delivered (or committed); then it waits for stdin to close (or for
SIGKILL), shuts down and prints `stats MADE DELIVERED FAILED TAKEN_OVER PENDING`
and `retried N` (requests it sent again).
"""

from __future__ import annotations

import functools
import sys

from courier_analytics import Client, RetryPolicy, _options
from courier_analytics._spool import Settings

#: The lease of a `hold` producer: short, so a test need not wait long for a takeover.
HOLD_LEASE = 2.0


def main() -> None:
    spool, base_url, api_key, count, name, mode = sys.argv[1:7]
    if mode == "commit":
        client = Client(api_key=api_key, base_url=base_url, spool=spool, deliver=False)
        every = 250
    else:
        hold = mode == "hold"
        if hold:  # no public option sets the lease: the test sets it where the client reads it
            _options.SpoolSettings = functools.partial(Settings, lease=HOLD_LEASE)  # type: ignore[misc]
        client = Client(
            api_key=api_key,
            base_url=base_url,
            spool=spool,
            retry=RetryPolicy(max_retries=2, initial_wait=0.01, max_wait=0.05, max_time=1.0),
            timeout=60.0,  # a loaded machine answers late: no request is cut and sent again
            **({"max_in_flight": 1} if hold else {}),
        )
        every = 100
    for n in range(int(count)):
        client.track("Produced", {"n": n, "p": name}, user_id=f"{name}-u{n % 20}")
        if n % every == every - 1:
            if mode == "commit":
                client.flush(600)
            print(f"made {n + 1}", flush=True)
    client.flush(600)  # generous: a loaded machine is slow, never stuck
    print("done", flush=True)
    sys.stdin.read()
    client.shutdown(30)
    stats = client.stats
    counts = (stats.made, stats.delivered, stats.failed, stats.taken_over, stats.pending)
    print("stats", *counts, flush=True)
    print(f"retried {stats.retried}", flush=True)


if __name__ == "__main__":
    main()
