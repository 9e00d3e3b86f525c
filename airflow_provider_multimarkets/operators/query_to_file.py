"""``MultiMarketsQueryToFileOperator``: a paged query over a time range, written to files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_multimarkets._compat import BaseOperator, Context
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError


class MultiMarketsQueryToFileOperator(BaseOperator):
    """Run a paged query (orders, trade records, capital flow, positions, ...) and write what it
    returns as JSON Lines and CSV (and Parquet when ``pyarrow`` is installed).

    The time range ``[start, end)`` goes into the query's documented body fields
    (``executeStartTime``/``executeEndTime`` for trade records, ``startTime``/``endTime`` for capital
    flow and positions; see :data:`..endpoints.TIME_RANGES`), and records are also kept only when
    their time field (``executeTime``, ``createTime``, ``openTime``) falls in it: the order list
    has no time filter in its body. Pages come from :meth:`MultiMarketsHook.paginate`, within the
    apiKey's shared budget. A query that does not add up (its total changed while paging) is run
    again from the start, up to ``max_attempts`` times; nothing partial is published. Returns a
    summary (rows, pages, paths), never the rows.

    :param biz_type: a paged interface, e.g. ``tradeapi.app.OrderApiService.queryTradeRecordPage``.
    :param payload: the query's other body fields (templated), e.g. ``{"tradeType": 2}``.
    :param start: start of the range (templated: ``{{ data_interval_start }}``, ISO text or Unix ms).
    :param end: end of the range, excluded (templated).
    :param output_path: a directory or an ``ObjectStoragePath`` URL (``s3://...``) (templated).
    :param name: file name stem (templated); default: the query's method name.
    :param formats: any of ``jsonl``, ``csv``, ``parquet``.
    :param page_size: records per page (1-1000). ``max_pages``: more pages fail the task.
    :param start_field: ``end_field``, ``time_field``: override the body fields and the record field
        of the time range ("" turns one off).
    :param hook_params: the hook's own arguments for this task (templated), e.g.
        ``{"timeout": 60, "max_retries": 5, "retry_backoff": 2, "rate_limit_per_minute": 50}``; they
        override the connection's extras of the same names. Unknown keys are a config error.
    """

    template_fields: Sequence[str] = ("biz_type", "payload", "start", "end", "output_path", "name", "hook_params")
    template_fields_renderers = {"payload": "json"}
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        biz_type: str,
        output_path: str,
        payload: dict[str, Any] | None = None,
        start: Any = None,
        end: Any = None,
        name: str | None = None,
        formats: Sequence[str] = ("jsonl", "csv", "parquet"),
        page_size: int = 100,
        max_pages: int = 1000,
        max_attempts: int = 3,
        start_field: str | None = None,
        end_field: str | None = None,
        time_field: str | None = None,
        hook_params: dict[str, Any] | None = None,
        multimarkets_conn_id: str = "multimarkets_default",
        **kwargs: Any,
    ) -> None:
        from airflow_provider_multimarkets.hooks.multimarkets import check_hook_params

        super().__init__(**kwargs)
        self.hook_params = check_hook_params(hook_params, self.task_id)
        self.biz_type = biz_type
        self.output_path = output_path
        self.payload = payload
        self.start = start
        self.end = end
        self.name = name
        self.formats = tuple(formats)
        self.page_size = page_size
        self.max_pages = max_pages
        self.max_attempts = max_attempts
        self.start_field = start_field
        self.end_field = end_field
        self.time_field = time_field
        self.multimarkets_conn_id = multimarkets_conn_id
        unknown = [f for f in self.formats if f not in ("jsonl", "csv", "parquet")]
        if unknown or not self.formats:
            raise MultiMarketsConfigError(f"{self.task_id}: formats are jsonl, csv and parquet, not {unknown or '()'}.")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_multimarkets.api.endpoints import epoch_ms, time_range_fields
        from airflow_provider_multimarkets.exceptions import MultiMarketsPagingError
        from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
        from airflow_provider_multimarkets.storage.files import check_file_name
        from airflow_provider_multimarkets.storage.table_files import TableFiles, parquet_available

        if self.payload is not None and not isinstance(self.payload, dict):
            raise MultiMarketsConfigError(
                f"{self.task_id}: payload must be a JSON object, not {type(self.payload).__name__}."
            )
        start_ms = None if self.start in (None, "") else epoch_ms(self.start)
        end_ms = None if self.end in (None, "") else epoch_ms(self.end)
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise MultiMarketsConfigError(
                f"{self.task_id}: the time range is empty (end {self.end} <= start {self.start}). A run of a cron "
                "schedule on Airflow 3 has a point-in-time data interval: schedule the DAG with "
                "CronDataIntervalTimetable, or pass start and end."
            )
        body_start, body_end, record_time = time_range_fields(self.biz_type)
        body_start = body_start if self.start_field is None else (self.start_field or None)
        body_end = body_end if self.end_field is None else (self.end_field or None)
        record_time = record_time if self.time_field is None else (self.time_field or None)
        body = dict(self.payload or {})
        if start_ms is not None and body_start:
            body[body_start] = start_ms
        if end_ms is not None and body_end:
            # the spec does not say whether its end is included: records at the end are cut below
            body[body_end] = end_ms
        name = self.name or self.biz_type.rsplit(".", 1)[-1]
        check_file_name(name, f"{self.task_id}: name")  # before any call or temporary file
        if "parquet" in self.formats and not parquet_available():
            self.log.info(
                "pyarrow is not installed: no Parquet file (pip install 'airflow-provider-multimarkets[parquet]')."
            )

        def in_range(record: dict[str, Any]) -> bool:
            if record_time is None or (start_ms is None and end_ms is None):
                return True
            stamp = record.get(record_time)
            if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
                return True  # no usable time: the server's filter decided
            return (start_ms is None or stamp >= start_ms) and (end_ms is None or stamp < end_ms)

        hook = MultiMarketsHook.for_task(self.multimarkets_conn_id, self.hook_params, self.task_id)
        attempts = 0
        while True:
            attempts += 1
            table = TableFiles(name)
            pages = received = 0
            try:
                for records in hook.paginate(self.biz_type, body, page_size=self.page_size, max_pages=self.max_pages):
                    pages += 1
                    received += len(records)
                    table.add(r for r in records if in_range(r))
            except MultiMarketsPagingError as exc:
                table.discard()
                if "changed" not in str(exc) or attempts >= self.max_attempts:
                    raise
                self.log.warning("%s Running it again (attempt %d of %d).", exc, attempts + 1, self.max_attempts)
                continue
            except BaseException:
                table.discard()
                raise
            break
        paths = table.publish(self.output_path, self.formats)
        summary = {
            "biz_type": self.biz_type,
            "rows": table.rows,
            "received": received,
            "outside_range": received - table.rows,
            "pages": pages,
            "attempts": attempts,
            "start_ms": start_ms,
            "end_ms": end_ms,
            "columns": len(table.columns),
            "paths": paths,
        }
        self.log.info(
            "%s: %d rows (%d received in %d pages, %d outside the range) written to %s",
            self.biz_type,
            table.rows,
            received,
            pages,
            received - table.rows,
            ", ".join(paths.values()),
        )
        return summary
