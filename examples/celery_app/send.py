"""Ask for an export as USER would: `python send.py USER REPORT_ID`.

In a web app the framework integration opens the scope; here it is opened by
hand. The task carries it to the worker, which tracks "Export Finished"
for USER.
"""

from __future__ import annotations

import sys

import courier_analytics as analytics
from tasks import export_report

if __name__ == "__main__":
    user, report_id = sys.argv[1], int(sys.argv[2])
    with analytics.scope(user_id=user):
        analytics.identify(traits={"email": f"{user}@example.com"})
        result = export_report.delay(report_id)
    print("report ready at", result.get(timeout=60))
    analytics.flush()
