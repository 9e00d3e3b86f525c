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
elapsed = time.perf_counter() - t
operators = sorted(set(sys.modules) - before)
# the sensor subclasses Airflow's sensor base: what that base's own module brings is the cost of any
# sensor (Airflow 2: airflow.sensors.base, with airflow.models.skipmixin), the sensor module adds nothing more
before = set(sys.modules)
from airflow_provider_multimarkets._compat import BaseSensorOperator
base = sorted(set(sys.modules) - before)
before = set(sys.modules)
import airflow_provider_multimarkets.sensors.order_status
sensor = sorted(set(sys.modules) - before)
print(json.dumps({"operators": operators, "sensor_base": base, "sensor": sensor, "ms": elapsed * 1000}))
"""


def _heavy(modules: list[str]) -> list[str]:
    roots = {f.split(".")[0] for f in FORBIDDEN if "." not in f}
    return [m for m in modules if m.split(".")[0] in roots or m.startswith("airflow_provider_multimarkets.sandbox")]


def _airflow_2() -> bool:
    from airflow_provider_multimarkets._compat import airflow_version

    return airflow_version().startswith("2.")


def test_operator_import_adds_no_heavy_module() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    added = result["operators"] + result["sensor_base"] + result["sensor"]
    assert _heavy(added) == [], _heavy(added)
    # the operators and hooks add only our own modules (and nothing of Airflow's DB layer), on every version:
    # what only the sensor (its base class) or the order operator (durable execution) needs is resolved lazily
    ours = [m for m in result["operators"] if not m.startswith("airflow_provider_multimarkets")]
    assert all(not m.startswith(("sqlalchemy", "airflow.models", "airflow.settings")) for m in ours), ours
    # the sensor module adds only our own modules on top of its base class
    assert all(m.startswith("airflow_provider_multimarkets") for m in result["sensor"]), result["sensor"]
    # Airflow 3: the base is airflow.sdk's, away from the DB layer too; Airflow 2's airflow.sensors.base imports
    # airflow.models.skipmixin and airflow.models.taskreschedule (on top of airflow.models.baseoperator, which a
    # DAG file has imported already), so there a DAG that uses the sensor pays for those, and only such a DAG
    if not _airflow_2():
        base = result["sensor_base"]
        assert all(not m.startswith(("sqlalchemy", "airflow.models", "airflow.settings")) for m in base), base
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
