"""An app process that only commits to a Redis spool (run by the fleet tests).

Usage: python producer.py SPOOL BASE_URL API_KEY COUNT NAME

Prints `made N` each time N messages are committed (every 250, after a flush),
then `done`; then waits for stdin to close (or for SIGKILL).
"""

from __future__ import annotations

import sys

from courier_analytics import Client


def main() -> None:
    spool, base_url, api_key, count, name = sys.argv[1:6]
    client = Client(api_key=api_key, base_url=base_url, spool=spool, deliver=False)
    for n in range(int(count)):
        client.track("Produced", {"n": n, "p": name}, user_id=f"{name}-u{n % 20}")
        if n % 250 == 249:
            client.flush(60)
            print(f"made {n + 1}", flush=True)
    client.flush(60)
    print("done", flush=True)
    sys.stdin.read()
    client.shutdown(5)


if __name__ == "__main__":
    main()
