"""Report building for pushes, accounts and fills (pure logic: no Airflow, no network).

Reports are written as a JSON document and a CSV table side by side; :func:`text_table` gives the
short table that tasks log.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_multimarkets.messaging.frames import parse_server_frame
from airflow_provider_multimarkets.storage.push_log import PushTally
from airflow_provider_multimarkets.storage.table_files import csv_cell, json_safe
from airflow_provider_multimarkets.trading.order_status import order_status_name


def summarize_pushes(lines: Iterable[str]) -> dict[str, Any]:
    """Counts of a push log: the subscription's own tally (one counting rule), plus trades by symbol and status."""
    tally = PushTally()
    trades: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"trades": 0, "lots": 0.0})
    malformed = bad_values = 0
    for line in lines:
        if not line.strip():
            continue
        frame = parse_server_frame(line)
        if frame is None:
            malformed += 1
            continue
        tally.add(frame)
        content = frame.get("content") if isinstance(frame.get("content"), dict) else {}
        assert isinstance(content, dict)
        params = content.get("paramMap")
        if frame.get("msgCode") == "trade" and isinstance(params, dict):
            status = str(order_status_name(params.get("orderStatus")))
            row = trades[(str(params.get("symbolName", params.get("symbolId", "?"))), status)]
            row["trades"] += 1
            lots = _finite(params.get("dealAmount"))
            if lots is None:
                bad_values += 1
            else:
                row["lots"] += lots
    rows = [
        {"symbol": symbol, "order_status": status, "trades": int(v["trades"]), "lots": round(v["lots"], 6)}
        for (symbol, status), v in sorted(trades.items())
    ]
    counts = tally.as_dict()
    return {
        "messages": counts["messages"],
        "malformed_lines": malformed,
        "bad_values": bad_values,
        "by_msg_code": counts["by_msg_code"],
        "by_biz_type": counts["by_biz_type"],
        "by_order_status": counts["by_order_status"],
        "trades_by_symbol_and_status": rows,
        "first_timestamp": counts["first_timestamp"],
        "last_timestamp": counts["last_timestamp"],
    }


def finite_number(value: Any) -> float | None:
    """A number from a field ("0.08" or 0.08); ``None`` for a missing value, a boolean, NaN,
    infinities and junk."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _finite(value: Any) -> float | None:
    """A number from a push field ("0.08", 0.08, None/"" as 0); ``None`` for NaN, infinities and junk."""
    if value in (None, ""):
        return 0.0
    return finite_number(value)


def account_list(customer: Any) -> list[dict[str, Any]]:
    """The trading accounts of ``findCustomerInfo``'s data, whichever shape ``accountList`` has: the
    examples show an array; the schema says object, which is read as one object per account keyed
    by accountId (``{"1034124": {...}}``) or as a single account (``{"accountId": ...}``)."""
    accounts = customer.get("accountList") if isinstance(customer, dict) else None
    if isinstance(accounts, list):
        return [a for a in accounts if isinstance(a, dict)]
    if isinstance(accounts, dict):
        if "accountId" in accounts:
            return [accounts]
        return [a for a in accounts.values() if isinstance(a, dict)]
    return []


def account_report(customer: dict[str, Any], symbols: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each account's currency, balance, equity and margin, and the symbols in trading hours."""
    accounts = account_list(customer)
    rows = [
        {
            "account_id": a.get("accountId"),
            "trade_type": a.get("tradeType"),
            "currency": a.get("currency"),
            "balance": a.get("balance"),
            "equity": a.get("equity"),
            "margin": a.get("margin"),
            "free_margin": a.get("freeMargin"),
        }
        for a in accounts
        if isinstance(a, dict)
    ]
    open_now = [s for s in symbols if s.get("inTradeTime") == 1]
    return {
        "customer_no": customer.get("customerNo"),
        "company_id": customer.get("companyId"),
        "accounts": rows,
        "symbols_total": len(symbols),
        "symbols_in_trading_hours": [
            {
                "symbol_id": s.get("symbolId"),
                "symbol": s.get("symbolCode"),
                "trade_type": s.get("tradeType"),
                "digits": s.get("symbolDigits"),
            }
            for s in open_now
        ],
    }


def fill_report(order: dict[str, Any], final_push: dict[str, Any] | None) -> dict[str, Any]:
    """What was asked, what the order call answered, and the final trade push of that order."""
    params = ((final_push or {}).get("content") or {}).get("paramMap") or {}
    return {
        "order_id": order.get("orderId"),
        "position_id": order.get("positionId"),
        "symbol": order.get("symbolName"),
        "direction": order.get("direction"),
        "execute_price": order.get("executePrice"),
        "final_status": order_status_name(params.get("orderStatus")),
        "deal_price": params.get("dealPrice"),
        "deal_amount": params.get("dealAmount"),
        "push_biz_type": ((final_push or {}).get("content") or {}).get("bizType"),
        "tracked": final_push is not None,
    }


def scale_price(price: float | str, digits: int) -> str:
    """A price as the API wants it in orders: price x 10^digits as an integer string (1.23, 3 -> '1230')."""
    from decimal import ROUND_HALF_UP, Decimal

    scaled = (Decimal(str(price)) * (Decimal(10) ** int(digits))).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return str(int(scaled))


def write_report(
    report: dict[str, Any], rows: Sequence[dict[str, Any]], out_dir: str | Path, name: str
) -> dict[str, str]:
    """Write ``<name>.json`` (the whole report) and ``<name>.csv`` (the rows); return their paths."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = directory / f"{name}.json", directory / f"{name}.csv"
    json_path.write_text(json.dumps(json_safe(report), indent=2, ensure_ascii=False, default=str, allow_nan=False))
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        fields = list(rows[0]) if rows else ["empty"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: csv_cell(json_safe(v)) for k, v in row.items()} for row in rows)
    return {"json": str(json_path), "csv": str(csv_path)}


def text_table(rows: Sequence[dict[str, Any]], limit: int = 20) -> str:
    """A fixed-width table of the first ``limit`` rows."""
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    shown = [[str(r.get(h, "")) for h in headers] for r in rows[:limit]]
    widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in shown]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    return "\n".join(lines)
