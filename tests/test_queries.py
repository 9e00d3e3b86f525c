"""History queries: the endpoint catalogue, checks before signing, paging, query-to-file, the sandbox's
query families, and the daily reconciliation example end to end."""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_PRIVATE_KEY, ORDER_BIZ_TYPE, ORDER_BODY, ROOT, load_dag, set_connection, ti_states, xcom_value

from airflow_provider_multimarkets.api.endpoints import catalogue, check_payload, endpoint, epoch_ms, time_range_fields
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsConfigError,
    MultiMarketsPagingError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.trading.reconciliation import reconcile

ORDERS = "tradeapi.app.OrderApiService.queryOrderPage"
TRADES = "tradeapi.app.OrderApiService.queryTradeRecordPage"
FLOWS = "tradeapi.app.OrderApiService.queryCapitalFlowList"
POSITIONS = "tradeapi.app.PositionApiService.queryPositionPage"
SPEC = ROOT.parent / "shared" / "MultiMarkets-ClientAPI.openapi.en.yaml"
AIRFLOW_3 = not __import__("airflow").__version__.startswith("2.")


@pytest.fixture
def demo_conn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A connection to a host that only requests-mock answers."""
    conn = {
        "conn_type": "multimarkets",
        "host": "https://gateway.invalid/openapi-c",
        "login": "1710e1f6b4b54c15bea72e8669966591",
        "password": DEMO_PRIVATE_KEY,
        "extra": {"company_id": 439, "retry_backoff": 0.01, "rate_limit_per_minute": 0},
    }
    set_connection(monkeypatch, conn)
    return conn


def _place(n: int) -> list[int]:
    with MultiMarketsHook() as hook:
        return [int(hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)["orderId"]) for _ in range(n)]


# ---- the catalogue ------------------------------------------------------------------------------------


@pytest.mark.skipif(not SPEC.exists(), reason="the vendor's OpenAPI file is not beside the repository")
def test_the_committed_catalogue_is_what_the_script_builds_from_the_spec() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_catalogue", ROOT / "scripts" / "build_endpoint_catalogue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build(SPEC)
    committed = (ROOT / "airflow_provider_multimarkets" / "api" / "endpoint_catalogue.json").read_text()
    assert module.render(built) == committed, "run: python scripts/build_endpoint_catalogue.py"


def test_catalogue_coverage_and_facts() -> None:
    data = catalogue()
    endpoints = data["endpoints"]
    assert data["source"]["paths"] == 322 and len(endpoints) == 284
    assert sum(1 for e in endpoints.values() if e["paging"]) == 37
    order_page = endpoint(ORDERS)
    assert order_page is not None and (order_page.version, order_page.group) == ("0.0.1", "tradeApi")
    assert order_page.required == ("tradeType",) and order_page.fields["thirdPartyOrder"] == "string"
    assert order_page.paging is not None and (order_page.paging.records_key, order_page.paging.total_key) == (
        "records",
        "total",
    )
    trades = endpoint(TRADES)
    assert trades is not None and trades.required == ("sortFieldName", "sortType", "tradeType")
    assert trades.paging is not None and (trades.paging.records_key, trades.paging.total_key) == ("list", "totalPage")
    positions = endpoint(POSITIONS)
    assert positions is not None and positions.paging is not None and positions.paging.records_key is None
    assert endpoint("no.such.Service.method") is None
    assert time_range_fields(TRADES) == ("executeStartTime", "executeEndTime", "executeTime")
    assert time_range_fields("tradeapi.app.SpotOrderApiService.queryCapitalFlowList")[0] == "startTime"


def test_payload_check_names_missing_fields_and_wrong_types() -> None:
    spec = endpoint(ORDER_BIZ_TYPE)
    assert spec is not None
    check_payload(spec, dict(ORDER_BODY))  # the documented example passes
    with pytest.raises(MultiMarketsConfigError, match=r"missing required field\(s\) requestNum, requestTime"):
        check_payload(spec, {k: v for k, v in ORDER_BODY.items() if k not in ("requestNum", "requestTime")})
    with pytest.raises(MultiMarketsConfigError, match=r"symbolId \(str '8390', expected integer\)"):
        check_payload(spec, {**ORDER_BODY, "symbolId": "8390"})
    with pytest.raises(MultiMarketsConfigError, match=r"tradeType \(bool True, expected integer\)"):
        check_payload(spec, {**ORDER_BODY, "tradeType": True})
    with pytest.raises(MultiMarketsConfigError, match=r"requestNum \(float"):
        check_payload(spec, {**ORDER_BODY, "requestNum": 0.1})
    check_payload(spec, {**ORDER_BODY, "somethingNew": [1]})  # fields the spec does not list pass


def test_epoch_ms_reads_what_templates_render() -> None:
    assert epoch_ms("2026-11-24T00:00:00+00:00") == 1795478400000
    assert epoch_ms("2026-11-24T00:00:00Z") == epoch_ms(dt.datetime(2026, 11, 24)) == 1795478400000
    assert epoch_ms("1795478400000") == epoch_ms(1795478400000) == 1795478400000
    with pytest.raises(MultiMarketsConfigError, match="ISO 8601"):
        epoch_ms("yesterday")


# ---- checks before signing, headers from the catalogue ------------------------------------------------


def test_a_bad_payload_is_rejected_before_any_request(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    with pytest.raises(MultiMarketsConfigError, match="missing required field"):
        hook.call(TRADES, {"tradeType": 2})
    with pytest.raises(MultiMarketsConfigError, match=r"tradeType \(str '2', expected integer\)"):
        hook.call(ORDERS, {"tradeType": "2"})
    with pytest.raises(MultiMarketsConfigError, match="missing required field"):
        list(hook.paginate(FLOWS, {}))
    assert sandbox.state.received[TRADES] == sandbox.state.received[ORDERS] == sandbox.state.received[FLOWS] == 0
    assert not sandbox.state.seen_signatures  # nothing was even signed and sent


def test_version_and_group_come_from_the_catalogue(demo_conn: dict[str, Any], requests_mock: Any) -> None:
    base = demo_conn["host"].rstrip("/")
    ok = {"code": "0", "msg": "Success", "ok": True, "fail": False, "trace": "t", "data": {"total": 0, "records": []}}
    requests_mock.post(f"{base}/global/{ORDERS}", json=ok)
    hook = MultiMarketsHook()
    hook.call(ORDERS, {"tradeType": 2})
    headers = requests_mock.request_history[-1].headers
    assert headers["version"] == "0.0.1" and headers["group"] == "tradeApi"
    hook.call(ORDERS, {"tradeType": 2}, version="0.0.2", group="other")  # the caller's win
    headers = requests_mock.request_history[-1].headers
    assert headers["version"] == "0.0.2" and headers["group"] == "other"


def test_an_undocumented_biz_type_goes_through_with_a_warning(
    demo_conn: dict[str, Any],
    requests_mock: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = demo_conn["host"].rstrip("/")
    ok = {"code": "0", "msg": "Success", "ok": True, "fail": False, "trace": "t", "data": 5}
    requests_mock.post(f"{base}/global/vendor.app.NewService.method", json=ok)
    hook = MultiMarketsHook()
    with caplog.at_level(logging.WARNING):
        assert hook.call("vendor.app.NewService.method", {"anything": "1"}) == 5
        assert hook.call("vendor.app.NewService.method", {"anything": "1"}) == 5
    out = capsys.readouterr().out  # where the hook's logger writes depends on the Airflow version
    assert max(caplog.text.count("not in the vendor's OpenAPI"), out.count("not in the vendor's OpenAPI")) == 1
    assert "bizType vendor.app.NewService.method" in caplog.text + out
    assert "version" not in requests_mock.request_history[-1].headers


# ---- the sandbox's query families ------------------------------------------------------------------------


def test_sandbox_validates_query_bodies_with_documented_codes(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    with pytest.raises(MultiMarketsApiError) as missing:
        hook.call(TRADES, {"tradeType": 2}, check=False)
    assert missing.value.code == "CFDWBWE000005" and "sortFieldName" in str(missing.value)
    with pytest.raises(MultiMarketsApiError) as wrong:
        hook.call(FLOWS, {"tradeType": 2, "startTime": "yesterday"}, check=False)
    assert wrong.value.code == "CFDWBWE000006"
    with pytest.raises(MultiMarketsApiError) as sort:
        hook.call(TRADES, {"tradeType": 2, "sortFieldName": "executeTime", "sortType": "up"}, check=False)
    assert sort.value.code == "CFDWBWE000014"  # the error table's "sort order must be ascending or descending"


def test_an_order_shows_up_in_every_query_family(mm_conn: dict[str, Any], sandbox: Any) -> None:
    (order_id,) = _place(1)
    hook = MultiMarketsHook()
    orders = [r for page in hook.paginate(ORDERS, {"tradeType": 2}) for r in page]
    trades = [
        r
        for page in hook.paginate(TRADES, {"tradeType": 2, "sortFieldName": "executeTime", "sortType": "asc"})
        for r in page
    ]
    flows = [r for page in hook.paginate(FLOWS, {"tradeType": 2}) for r in page]
    positions = [r for page in hook.paginate(POSITIONS, {"tradeType": 2}) for r in page]
    assert [o["id"] for o in orders] == [order_id] and orders[0]["status"] == 2
    assert [(t["orderId"], t["executeNum"]) for t in trades] == [(order_id, orders[0]["executeNum"])]
    # the spec's business types: 6 (trade) with sub-type 6001 (open fee), 6002 (close fee), 6004 (close P/L)
    assert [(f["orderId"], f["businessType"], f["businessType1"]) for f in flows] == [(order_id, 6, 6001)]
    assert [p["orderId"] for p in positions] == [order_id] and positions[0]["positionId"] == orders[0]["positionId"]
    # closing the position books its profit and removes it
    close = {**ORDER_BODY, "bizType": 2, "direction": 2, "positionId": orders[0]["positionId"]}
    closing = int(hook.call(ORDER_BIZ_TYPE, close, idempotent=False)["orderId"])
    flows = [r for page in hook.paginate(FLOWS, {"tradeType": 2}) for r in page]
    assert sorted((f["orderId"], f["businessType1"]) for f in flows) == [
        (order_id, 6001),
        (closing, 6002),
        (closing, 6004),
    ]
    assert [r for page in hook.paginate(POSITIONS, {"tradeType": 2}) for r in page] == []


# ---- paging --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("biz_type", "payload"),
    [
        (ORDERS, {"tradeType": 2}),
        (TRADES, {"tradeType": 2, "sortFieldName": "executeTime", "sortType": "asc"}),
        (FLOWS, {"tradeType": 2}),
        (POSITIONS, {"tradeType": 2}),
    ],
)
def test_paging_over_zero_one_and_many_pages(
    mm_conn: dict[str, Any], sandbox: Any, biz_type: str, payload: dict[str, Any]
) -> None:
    hook = MultiMarketsHook()
    assert list(hook.paginate(biz_type, payload, page_size=3)) == []
    placed = _place(2)
    (page,) = hook.paginate(biz_type, payload, page_size=3)
    assert len(page) == 2
    placed += _place(6)  # 8 in all: pages of 3, 3, 2
    pages = list(hook.paginate(biz_type, payload, page_size=3))
    assert [len(p) for p in pages] == [3, 3, 2]
    ids = [r.get("id", r.get("orderId")) for p in pages for r in p]
    assert sorted(ids) == sorted(placed)  # every record once
    placed += _place(1)  # 9: the last page is full, so one more (empty) request says it was the last
    assert [len(p) for p in hook.paginate(biz_type, payload, page_size=3)] == [3, 3, 3]


def test_total_that_changes_mid_way_is_an_error(mm_conn: dict[str, Any], sandbox: Any) -> None:
    _place(5)
    hook = MultiMarketsHook()
    pages = hook.paginate(ORDERS, {"tradeType": 2}, page_size=2)
    first = next(pages)
    assert len(first) == 2
    _place(1)  # an order arrives while paging: newest first, so every later page shifts
    with pytest.raises(MultiMarketsPagingError, match="total changed from 5 to 6 at page 2"):
        next(pages)


def test_total_and_records_that_disagree_and_too_many_pages(mm_conn: dict[str, Any], sandbox: Any) -> None:
    _place(5)
    hook = MultiMarketsHook()
    with pytest.raises(MultiMarketsPagingError, match="more than max_pages=2 pages"):
        list(hook.paginate(ORDERS, {"tradeType": 2}, page_size=2, max_pages=2))
    with pytest.raises(MultiMarketsConfigError, match="page_size"):
        list(hook.paginate(ORDERS, {"tradeType": 2}, page_size=0))
    with pytest.raises(MultiMarketsConfigError, match="does not page"):
        list(hook.paginate("getMsgPushToken"))

    real_call = hook.call

    def short_pages(biz_type: str, payload: Any = None, **kwargs: Any) -> Any:
        data = real_call(biz_type, payload, **kwargs)
        data["records"] = data["records"][:1]  # the server drops rows it counted
        return data

    hook.call = short_pages  # type: ignore[method-assign]
    with pytest.raises(MultiMarketsPagingError, match="total says 5 records, 1 arrived"):
        list(hook.paginate(ORDERS, {"tradeType": 2}, page_size=2))


# ---- query to file -------------------------------------------------------------------------------------


def _context() -> dict[str, Any]:
    return {}


def test_query_to_file_writes_the_range_and_returns_a_summary(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    from airflow_provider_multimarkets.operators.query_to_file import MultiMarketsQueryToFileOperator

    before = _place(2)
    start = sandbox.state.clock() * 1000 + 1
    sandbox.state.clock = (lambda base=sandbox.state.clock: lambda: base() + 1.0)()  # one second later
    inside = _place(3)
    end = sandbox.state.clock() * 1000 + 1
    sandbox.state.clock = (lambda base=sandbox.state.clock: lambda: base() + 1.0)()
    _place(1)
    for biz_type, payload in (
        (ORDERS, {"tradeType": 2}),
        (TRADES, {"tradeType": 2, "sortFieldName": "executeTime", "sortType": "asc"}),
    ):
        op = MultiMarketsQueryToFileOperator(
            task_id="q",
            biz_type=biz_type,
            payload=payload,
            start=int(start),
            end=int(end),
            output_path=f"file://{tmp_path / 'out'}",
            page_size=2,
        )
        summary = op.execute(_context())  # type: ignore[arg-type]
        assert summary["rows"] == 3 and summary["attempts"] == 1
        paths = summary["paths"]
        rows = [json.loads(line) for line in Path(paths["jsonl"]).read_text().splitlines()]
        ids = sorted(r.get("id", r.get("orderId")) for r in rows)
        assert ids == sorted(inside) and not set(ids) & set(before)
        with open(paths["csv"], newline="") as handle:
            table = list(csv.DictReader(handle))
        assert sorted(int(r.get("id") or r["orderId"]) for r in table) == sorted(inside)
        assert "rows" not in json.dumps(summary["paths"])
        if "parquet" in paths:  # with pyarrow (the dev group installs it)
            import pyarrow.parquet as pq

            parquet = pq.read_table(paths["parquet"])
            assert parquet.num_rows == 3 and sorted(
                parquet.column("id" if biz_type == ORDERS else "orderId").to_pylist()
            ) == sorted(inside)
            assert str(parquet.schema.field("executeTime").type) == "int64"
    assert summary["outside_range"] == 0  # trade records: the range went into the body
    assert op.template_fields == ("biz_type", "payload", "start", "end", "output_path", "name")


def test_query_to_file_runs_again_when_the_total_changes(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_multimarkets.operators.query_to_file import MultiMarketsQueryToFileOperator

    _place(3)
    real = MultiMarketsHook.paginate
    calls = {"n": 0}

    def flaky(self: MultiMarketsHook, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        pages = real(self, *args, **kwargs)
        yield next(pages)
        if calls["n"] == 1:
            raise MultiMarketsPagingError("tradeapi...: the total changed from 3 to 4 at page 2")
        yield from pages

    monkeypatch.setattr(MultiMarketsHook, "paginate", flaky)
    op = MultiMarketsQueryToFileOperator(
        task_id="q",
        biz_type=ORDERS,
        payload={"tradeType": 2},
        output_path=str(tmp_path),
        page_size=2,
        formats=["jsonl"],
    )
    summary = op.execute(_context())  # type: ignore[arg-type]
    assert summary["attempts"] == 2 and summary["rows"] == 3 and set(summary["paths"]) == {"jsonl"}
    assert len(Path(summary["paths"]["jsonl"]).read_text().splitlines()) == 3  # nothing from the first attempt


def test_query_to_file_rejects_bad_arguments(mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path) -> None:
    from airflow_provider_multimarkets.operators.query_to_file import MultiMarketsQueryToFileOperator

    with pytest.raises(MultiMarketsConfigError, match="formats"):
        MultiMarketsQueryToFileOperator(task_id="q", biz_type=ORDERS, output_path="x", formats=["xlsx"])
    op = MultiMarketsQueryToFileOperator(
        task_id="q", biz_type=ORDERS, output_path=str(tmp_path), start="2026-11-25", end="2026-11-24"
    )
    with pytest.raises(MultiMarketsConfigError, match="time range is empty"):
        op.execute(_context())  # type: ignore[arg-type]
    assert sandbox.state.received[ORDERS] == 0


# ---- reconciliation ---------------------------------------------------------------------------------


def test_reconcile_flags_each_kind_of_discrepancy() -> None:
    orders = [
        {"id": 1, "status": 2, "executeNum": "0.1"},
        {"id": 2, "status": 2, "executeNum": "0.2"},
        {"id": 3, "status": 2, "executeNum": "0.3"},
        {"id": 4, "status": 1, "executeNum": "0"},  # received, not executed: nothing expected
    ]
    trades = [
        {"orderId": 1, "executeNum": "0.1"},
        {"orderId": 3, "executeNum": "0.1"},
        {"orderId": 99, "executeNum": "1"},
    ]
    flows = [{"orderId": 1, "amountIn": "0", "amountOut": "0.5"}, {"orderId": 3, "amountIn": "2", "amountOut": "0"}]
    report = reconcile(orders, trades, flows)
    issues = {r["order_id"]: r["issues"] for r in report["rows"]}
    assert issues == {
        "1": "",
        "2": "order_without_trade_record,no_capital_flow",
        "3": "quantity_mismatch",
        "4": "",
        "99": "trade_record_without_order",
    }
    assert report["summary"]["discrepancies"] == {
        "order_without_trade_record": 1,
        "trade_record_without_order": 1,
        "quantity_mismatch": 1,
        "no_capital_flow": 1,
    }
    assert next(r for r in report["rows"] if r["order_id"] == "1")["capital_flow_net"] == -0.5


@pytest.mark.usefixtures("airflow_db")
def test_daily_reconciliation_example_end_to_end(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    placed = _place(4)
    hook = MultiMarketsHook()
    orders = [r for page in hook.paginate(ORDERS, {"tradeType": 2}) for r in page]
    close = {**ORDER_BODY, "bizType": 2, "direction": 2, "positionId": orders[-1]["positionId"]}
    placed.append(int(hook.call(ORDER_BIZ_TYPE, close, idempotent=False)["orderId"]))
    withheld = sandbox.state.seed_discrepancy("missing_trade_record", sandbox.company_id, placed[1])
    ghost = sandbox.state.seed_discrepancy("unmatched_trade_record", sandbox.company_id)
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    dag_run = load_dag("example_multimarkets_daily_reconciliation").test(
        run_conf={
            "report_dir": str(tmp_path / "reports"),
            "start": today.isoformat(),
            "end": (today + dt.timedelta(days=1)).isoformat(),
        }
    )
    assert ti_states(dag_run) == {
        "orders": "success",
        "trade_records": "success",
        "capital_flow": "success",
        "reconcile": "success",
    }
    assert xcom_value(dag_run, "orders")["rows"] == 5
    assert xcom_value(dag_run, "trade_records")["rows"] == 5  # 4 fills + the unmatched one - the withheld one
    assert xcom_value(dag_run, "capital_flow")["rows"] == 6  # a commission per fill, the close's profit
    result = xcom_value(dag_run, "reconcile")
    assert result["orders"] == 5 and result["trade_records"] == 5
    assert result["discrepancies"] == {
        "order_without_trade_record": 1,
        "trade_record_without_order": 1,
        "quantity_mismatch": 0,
        "no_capital_flow": 0,
    }
    assert sorted(result["flagged_orders"]) == sorted([str(withheld["orderId"]), str(ghost["orderId"])])
    with open(result["paths"]["csv"], newline="") as handle:
        rows = {r["order_id"]: r for r in csv.DictReader(handle)}
    truth = {o["response"]["orderId"]: o for o in sandbox.state.orders}
    assert set(rows) == {str(i) for i in truth} | {str(ghost["orderId"])}
    for order_id, placed_order in truth.items():
        row = rows[str(order_id)]
        assert row["order_execute_num"] == placed_order["response"]["tradeVolume"]
        assert row["symbol"] == placed_order["response"]["symbolName"]
    assert rows[str(withheld["orderId"])]["issues"] == "order_without_trade_record"
    assert rows[str(ghost["orderId"])]["issues"] == "trade_record_without_order"
    # as the scheduler runs it: no params, the data interval of the run at midnight is the day before
    dag = load_dag("example_multimarkets_daily_reconciliation")
    when = {"logical_date" if AIRFLOW_3 else "execution_date": today + dt.timedelta(days=1)}
    scheduled = dag.test(run_conf={"report_dir": str(tmp_path / "scheduled")}, **when)
    assert ti_states(scheduled)["reconcile"] == "success"
    assert xcom_value(scheduled, "orders")["start_ms"] == epoch_ms(today)
    assert xcom_value(scheduled, "reconcile")["orders"] == 5
