"""DAG files import our operators every parse cycle: that import must stay light.

Checked in a fresh interpreter: what importing the operator and hook modules adds on top of
``airflow.sdk``. No wall-clock assertion (timings are measured in bench/, not asserted).
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "requests",
    "urllib3",
    "cryptography",
    "websockets",
    "aiohttp",
    "airflow_provider_multimarkets.sandbox",
    "sqlalchemy.orm.session",
)

PROBE = r"""
import json, sys, time
try:
    import airflow.sdk
    from airflow.sdk import BaseOperator, DAG  # resolve the lazy names a DAG file uses anyway
except ImportError:  # Airflow 2.x
    from airflow.models import BaseOperator, DAG
try:
    from airflow.sdk import BaseHook
except ImportError:
    from airflow.hooks.base import BaseHook
before = set(sys.modules)
t = time.perf_counter()
import airflow_provider_multimarkets.operators.msg_token
import airflow_provider_multimarkets.operators.multimarkets
import airflow_provider_multimarkets.hooks.multimarkets
import airflow_provider_multimarkets.operators.order
import airflow_provider_multimarkets.sensors.order_status
elapsed = time.perf_counter() - t
print(json.dumps({"added": sorted(set(sys.modules) - before), "ms": elapsed * 1000}))
"""


def test_operator_import_adds_no_heavy_module() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    added = result["added"]
    heavy = [
        m
        for m in added
        if m.split(".")[0] in {f.split(".")[0] for f in FORBIDDEN if "." not in f}
        or m.startswith("airflow_provider_multimarkets.sandbox")
    ]
    assert heavy == [], heavy
    ours = [m for m in added if not m.startswith("airflow_provider_multimarkets")]
    # only our own modules (and nothing of Airflow's DB layer) are added
    assert all(not m.startswith(("sqlalchemy", "airflow.models", "airflow.settings")) for m in ours), ours
    print(f"operator + hook import added {result['ms']:.1f} ms and modules: {added}")


def test_operator_construction_touches_no_connection(monkeypatch: object) -> None:
    probe = r"""
import os, sys
os.environ.pop("AIRFLOW_CONN_MULTIMARKETS_DEFAULT", None)
import airflow
had_requests = "requests" in sys.modules  # Airflow 2 imports it by itself
from airflow_provider_multimarkets.operators.msg_token import GetMsgTokenOperator
from airflow_provider_multimarkets.operators.multimarkets import MultiMarketsOperator
op = GetMsgTokenOperator(task_id="t")
op2 = MultiMarketsOperator(task_id="c", biz_type="customer.app.CustomerWebApiService.findCustomerInfo")
print("requests" in sys.modules and not had_requests, "hook" in op.__dict__)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "False"]
    json.dumps(out)
