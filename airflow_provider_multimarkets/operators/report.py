"""``MultiMarketsPushReportOperator``: turn a JSON Lines file of pushes into a JSON + CSV report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_provider_multimarkets._compat import BaseOperator, Context
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError


class MultiMarketsPushReportOperator(BaseOperator):
    """Summarise the pushes a subscription wrote (messages by type, trades by symbol and status).

    Writes ``<output_dir>/<name>.json`` and ``.csv``, logs a short table and returns the figures
    and paths (bounded: one row per symbol and status).

    :param input_path: the subscription's ``output_path`` (templated): a JSON Lines file, a
        ``file://`` URL, or an object-store URL whose segments are all read (each push once).
    :param output_dir: where the report goes (templated).
    :param name: file name stem of the report.
    """

    template_fields: Sequence[str] = ("input_path", "output_dir", "name")
    ui_color = "#eef7ee"

    def __init__(self, *, input_path: str, output_dir: str, name: str = "push_report", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_path = input_path
        self.output_dir = output_dir
        self.name = name

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_multimarkets.storage.logs import iter_push_lines
        from airflow_provider_multimarkets.storage.paths import is_object_store_url, local_path
        from airflow_provider_multimarkets.trading.reports import summarize_pushes, text_table, write_report

        if not is_object_store_url(self.input_path) and not Path(local_path(self.input_path)).is_file():
            raise MultiMarketsConfigError(
                f"{self.task_id}: no pushes file at {self.input_path}. Point input_path at the subscription's "
                "output_path (with a deferrable subscription, on a path the triggerer and this worker share, or an "
                "object-store URL)."
            )
        summary = summarize_pushes(iter_push_lines(self.input_path))  # a PushLogError names the path and the fix
        rows = summary["trades_by_symbol_and_status"]
        paths = write_report(summary, rows, self.output_dir, self.name)
        self.log.info("Pushes: %d (%s)", summary["messages"], summary["by_msg_code"])
        self.log.info("Trades by symbol and status:\n%s", text_table(rows))
        self.log.info("Report written to %s and %s", paths["json"], paths["csv"])
        return {**paths, "messages": summary["messages"], "by_msg_code": summary["by_msg_code"], "trades": rows}
