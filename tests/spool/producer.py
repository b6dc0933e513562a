"""A process that makes tracks as fast as it can through a spool (run by the spool tests).

Usage: python producer.py SPOOL BASE_URL API_KEY COUNT NAME

Prints `made N` after every 100 messages (flushed), then `done` once all are
delivered or parked; then waits for stdin to close (or for SIGKILL).
"""

from __future__ import annotations

import sys

from courier_analytics import Client, RetryPolicy


def main() -> None:
    spool, base_url, api_key, count, name = sys.argv[1:6]
    client = Client(
        api_key=api_key,
        base_url=base_url,
        spool=spool,
        retry=RetryPolicy(max_retries=2, initial_wait=0.01, max_wait=0.05, max_time=1.0),
        timeout=10.0,
    )
    for n in range(int(count)):
        client.track("Produced", {"n": n, "p": name}, user_id=f"{name}-u{n % 20}")
        if n % 100 == 99:
            print(f"made {n + 1}", flush=True)
    client.flush(60)
    print("done", flush=True)
    sys.stdin.read()
    client.shutdown(5)


if __name__ == "__main__":
    main()
