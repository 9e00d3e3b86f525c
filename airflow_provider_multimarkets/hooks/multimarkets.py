"""``MultiMarketsHook``: signed calls to the MultiMarkets Open API over one reused HTTP session.

Light at import time: ``requests`` and ``cryptography`` are imported when the first call is made,
never when a DAG file imports an operator.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets import __version__
from airflow_provider_multimarkets._compat import BaseHook, airflow_version, mask_secret
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsError,
)

if TYPE_CHECKING:
    import requests

    from airflow_provider_multimarkets.api.budget import BudgetStore, CallBudget
    from airflow_provider_multimarkets.api.retry import RetryPolicy
    from airflow_provider_multimarkets.api.settings import ConnectionSettings
    from airflow_provider_multimarkets.api.signing import Signer

#: the hook's own keyword arguments, which an operator's ``hook_params`` may set
HOOK_PARAMS = ("timeout", "max_retries", "retry_backoff", "rate_limit_per_minute")
MSG_TOKEN_BIZ_TYPE = "getMsgPushToken"  # noqa: S105 - a bizType, not a secret
#: a bizType as the spec writes it: dotted names, and two with a "/" that the URL path carries as it is
#: (``thirdExt/randomKey``); no empty, "." or ".." segment, so a bizType never leaves ``/global/``
_BIZ_TYPE_RE = re.compile(r"^(?!\.{1,2}(?:/|$))[A-Za-z0-9_.\-]+(?:/(?!\.{1,2}(?:/|$))[A-Za-z0-9_.\-]+)*$")
#: an idempotency key: printable ASCII (a header value), at most 255 characters
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
IDEMPOTENCY_HEADER = "idempotency-key"
_HEADER_VALUE_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


def check_hook_params(hook_params: Any, task_id: str | None, *, rendered: bool = False) -> dict[str, Any]:
    """An operator's ``hook_params``: a dict of the hook's own keyword arguments (:data:`HOOK_PARAMS`).

    Checked when the operator is built (the keys; a template string is let through until it is
    rendered) and again with the values when the hook is made (:meth:`MultiMarketsHook.for_task`).
    """
    if hook_params is None:
        return {}
    if isinstance(hook_params, str) and not rendered:
        return hook_params  # type: ignore[return-value]  # a template, rendered to a dict before execute
    if not isinstance(hook_params, Mapping):
        raise MultiMarketsConfigError(
            f"{task_id}: hook_params must be a dict of the hook's arguments ({', '.join(HOOK_PARAMS)}), "
            f"not {type(hook_params).__name__}."
        )
    unknown = sorted(str(k) for k in hook_params if k not in HOOK_PARAMS)
    if unknown:
        raise MultiMarketsConfigError(
            f"{task_id}: hook_params has unknown key(s) {', '.join(unknown)}: the hook takes "
            f"{', '.join(HOOK_PARAMS)}. Other settings are connection extras."
        )
    return dict(hook_params)


def new_trace(timestamp_ms: int) -> str:
    """A unique trace id in the form the documentation's examples use (``x-<ms>-<random>``)."""
    return f"x-{timestamp_ms}-{uuid.uuid4().hex}"


class MultiMarketsHook(BaseHook):
    """Signed calls to the MultiMarkets Open API (``POST {host}/global/{bizType}``).

    :param multimarkets_conn_id: the Airflow connection of type ``multimarkets``.
    :param timeout: overrides the connection's ``timeout`` extra (seconds, or ``(connect, read)``).
    :param max_retries: overrides the connection's ``max_retries`` extra.
    :param retry_backoff: overrides the connection's ``retry_backoff`` extra (seconds).
    :param rate_limit_per_minute: overrides the connection's ``rate_limit_per_minute`` (0: off).
    """

    conn_name_attr = "multimarkets_conn_id"
    default_conn_name = "multimarkets_default"
    conn_type = "multimarkets"
    hook_name = "MultiMarkets Open API"

    def __init__(
        self,
        multimarkets_conn_id: str = default_conn_name,
        *,
        timeout: float | tuple[float, float] | None = None,
        max_retries: int | None = None,
        retry_backoff: float | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> None:
        super().__init__()
        self.multimarkets_conn_id = multimarkets_conn_id
        #: who makes the calls, for error messages ("the Airflow API server" for the UI's Test button)
        self._where = "this worker"
        self._undocumented_warned: set[str] = set()
        self._overrides: dict[str, Any] = {
            "timeout": timeout,
            "max_retries": max_retries,
            "retry_backoff": retry_backoff,
            "rate_limit_per_minute": rate_limit_per_minute,
        }

    def __repr__(self) -> str:
        return f"<MultiMarketsHook conn_id={self.multimarkets_conn_id!r}>"

    @classmethod
    def for_task(cls, multimarkets_conn_id: str, hook_params: Any, task_id: str) -> MultiMarketsHook:
        """The hook of an operator: its connection and its ``hook_params`` (rendered), checked with an
        error that names the task, ``hook_params`` and the key."""
        from airflow_provider_multimarkets.api.settings import check_hook_overrides

        params = check_hook_params(hook_params, task_id, rendered=True)
        check_hook_overrides(params, task_id)
        return cls(multimarkets_conn_id, **params)

    # ---- connection, key, session: built on first use, once per hook -------------------------

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The validated connection settings; the secretKey is registered with the masker."""
        from airflow_provider_multimarkets.api.settings import (
            missing_connection_message,
            settings_from_airflow_connection,
        )

        conn = self._connection(self.multimarkets_conn_id, missing_connection_message(self.multimarkets_conn_id))
        settings = settings_from_airflow_connection(
            conn, self.multimarkets_conn_id, overrides=self._overrides, mask=mask_secret
        )
        if settings.unknown_extras:
            self.log.warning(
                "Connection %r: ignoring unknown extra field(s) %s (they are not sent anywhere).",
                self.multimarkets_conn_id,
                ", ".join(settings.unknown_extras),
            )
        return settings

    @cached_property
    def signer(self) -> Signer:
        """The parsed private key; parsed once per hook."""
        from airflow_provider_multimarkets.api.signing import Signer

        return Signer(self.settings.secret_key, self.settings.sign_charset)

    @cached_property
    def session(self) -> requests.Session:
        """One HTTP session per hook, reused by every call (keep-alive, one connection per thread)."""
        from airflow_provider_multimarkets.api.transport import build_session

        verify = self.settings.verify
        if verify is True:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        return build_session(self.user_agent, verify, self.settings.base_url)

    @cached_property
    def user_agent(self) -> str:
        import requests

        return (
            f"airflow-provider-multimarkets/{__version__} "
            f"(apache-airflow/{airflow_version()}; python-requests/{requests.__version__})"
        )

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        from airflow_provider_multimarkets.api.retry import RetryPolicy

        return RetryPolicy(max_retries=self.settings.max_retries, backoff=self.settings.retry_backoff)

    @cached_property
    def budget(self) -> CallBudget:
        """The apiKey's call budget and ban breaker, shared with every process that uses the key."""
        from airflow_provider_multimarkets.api.budget import SAFETY_MARGIN_SECONDS, CallBudget

        settings = self.settings
        window = settings.rate_limit_window + min(SAFETY_MARGIN_SECONDS, settings.rate_limit_window / 4)
        return CallBudget(
            self._budget_store(window),
            limit=settings.rate_limit_per_minute,
            window=window,
            max_wait=settings.rate_limit_max_wait,
            ban_seconds=settings.ban_seconds,
            log=self.log.info,
        )

    def _budget_store(self, window: float) -> BudgetStore:
        from airflow_provider_multimarkets.api.budget import (
            FallbackStore,
            HostStore,
            ProcessStore,
            RedisStore,
            default_budget_dir,
            host_id,
            key_id,
            kubernetes_warning,
        )

        settings = self.settings
        limit = settings.rate_limit_per_minute
        directory = settings.rate_limit_dir or default_budget_dir()
        max_wait = settings.rate_limit_max_wait
        if settings.rate_limit_store == "process":
            return ProcessStore(limit, window)
        if settings.rate_limit_store != "redis":
            warning = kubernetes_warning()
            if warning:
                self.log.warning("%s", warning)
            return HostStore(directory, settings.api_key, limit, window, lock_timeout=max_wait)

        def connect() -> RedisStore:
            client, where = self._redis_client()
            return RedisStore(
                client,
                settings.api_key,
                limit,
                window,
                description=where,
                cache_dir=_cache_dir(directory),
                host=host_id(directory),
                log=self.log.warning,
            )

        if settings.rate_limit_fallback != "host":
            return connect()
        return FallbackStore(
            connect,
            lambda share: HostStore(
                directory,
                settings.api_key,
                share,
                window,
                lock_timeout=max_wait,
                name=f"{key_id(settings.api_key)}.fallback",
            ),
            limit=limit,
            hosts=settings.rate_limit_hosts,
            description=f"Redis, connection {settings.rate_limit_redis_conn_id!r}",
            log=self.log.warning,
        )

    def _connection(self, conn_id: str, missing: str) -> Any:
        """An Airflow connection; a missing one is a config error with the ``missing`` text."""
        try:
            return self.get_connection(conn_id)
        except MultiMarketsError:
            raise
        except Exception as exc:
            if type(exc).__name__ != "AirflowNotFoundException":
                raise
            raise MultiMarketsConfigError(missing) from None

    def _redis_client(self) -> tuple[Any, str]:
        """A Redis client from the Airflow connection named by ``rate_limit_redis_conn_id``, built by
        the Redis provider's ``RedisHook`` (its connection form, auth and TLS options), with bounded
        socket timeouts and a short retry, so that an unreachable Redis is an error within seconds."""
        conn_id = str(self.settings.rate_limit_redis_conn_id)
        try:
            from airflow.providers.redis.hooks.redis import RedisHook
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise MultiMarketsConfigError(
                "The extra 'rate_limit_redis_conn_id' needs the Redis provider: pip install "
                "'airflow-provider-multimarkets[redis]' (apache-airflow-providers-redis)."
            ) from None
        conn = self._connection(
            conn_id,
            f"MultiMarkets connection field 'rate_limit_redis_conn_id' names {conn_id!r}, which is not an "
            f"Airflow connection. Create it (type 'redis', host and port of a Redis server every worker "
            f"reaches), e.g. AIRFLOW_CONN_{conn_id.upper()}='redis://redis-host:6379?db=0'.",
        )
        if conn.password:
            mask_secret(conn.password)
        from airflow_provider_multimarkets.api.budget import REDIS_SOCKET_TIMEOUT

        try:
            client = RedisHook(redis_conn_id=conn_id).get_conn()
        except ValueError as exc:
            raise MultiMarketsConfigError(f"The Redis connection {conn_id!r} is not usable: {exc}") from None
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
        if isinstance(kwargs, dict):  # before any connection is made: every connection gets them
            kwargs.update(socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT)
        # a Redis restarting (refused for a moment) is retried for about a second, no longer
        client.set_retry(Retry(ExponentialBackoff(cap=0.5, base=0.1), 3))
        host, port = conn.host or "localhost", conn.port or 6379
        db = (conn.extra_dejson if conn.extra else {}).get("db") or 0
        return client, f"Redis {host}:{port}/{db}, connection {conn_id!r}"

    def close(self) -> None:
        """Close the HTTP session (it is rebuilt on the next call)."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()
        budget = self.__dict__.pop("budget", None)
        if budget is not None:
            budget.close()

    def __enter__(self) -> MultiMarketsHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- calls --------------------------------------------------------------------------------

    def build_request(
        self,
        biz_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        group: str | None = None,
        timestamp_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body bytes of one signed request (the body is exactly what was signed).

        ``idempotency_key`` is sent as the ``idempotency-key`` header unless the connection's
        ``idempotency_key`` extra is false (see :meth:`call`)."""
        from airflow_provider_multimarkets.api.signing import canonical_json

        settings = self.settings
        _check_biz_type(biz_type)
        body = canonical_json(payload, settings.canonical)
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        headers = {
            "companyId": str(settings.company_id),
            "trace": new_trace(ts),
            "timestamp": str(ts),
            "apiKey": settings.api_key,
            "signature": self.signer.sign_body(body, ts),
            "recvWindow": str(settings.recv_window),
        }
        if settings.lang:
            headers["lang"] = settings.lang
        if version:
            headers["version"] = _header_value("version", version)
        if group:
            headers["group"] = _header_value("group", group)
        if idempotency_key is not None and settings.idempotency_key:
            headers[IDEMPOTENCY_HEADER] = _idempotency_key(idempotency_key)
        return settings.url_for(biz_type), headers, body.encode("utf-8")

    def call(
        self,
        biz_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        group: str | None = None,
        idempotent: bool = True,
        check: bool = True,
        idempotency_key: str | None = None,
    ) -> Any:
        """Sign and send one Open API call; return the envelope's ``data``.

        :param biz_type: the interface's bizType, e.g. ``getMsgPushToken``.
        :param payload: the JSON body (a dict); ``None`` sends ``{}``.
        :param version: the ``version`` header some interfaces require (e.g. ``0.0.1``); by default
            the one the vendor's OpenAPI documents for ``biz_type`` (:mod:`~airflow_provider_multimarkets.api.endpoints`).
        :param group: the ``group`` header (e.g. ``tradeApi``); documented default as for ``version``.
        :param idempotent: ``False`` for calls that must never run twice (order placement): then
            only failures where the request provably was not sent are retried.
        :param check: check the payload against the documented request schema first (required
            fields, JSON types, array items, nested objects, integer ranges) and raise
            :class:`MultiMarketsConfigError` before anything is sent.
        :param idempotency_key: sent as the ``idempotency-key`` header (every try of this call sends
            the same key): the gateway then answers a repeat of the same key, bizType, version, group
            and companyId within 24 h from its cache, and refuses a repeat that arrives while the first
            is still processed with ``GATEWAY_CODE_018``
            (:class:`MultiMarketsConcurrentDuplicateError`: that try did nothing). The connection
            extra ``idempotency_key: false`` turns sending it off.
        :raises MultiMarketsError: a typed subclass for every failure.

        The call ends within ``call_deadline`` seconds, retries included: every exchange gets what is
        left of it, a retry starts only if its back-off ends in time, and an answer still arriving
        when it passes is not retried. Waits for the shared budget (bounded by
        ``rate_limit_max_wait``, nothing sent meanwhile) do not count against it.
        """
        from airflow_provider_multimarkets.api.retry import retryable_error

        version, group = self._documented(biz_type, payload, version, group, check=check)
        if idempotency_key is not None:
            _idempotency_key(idempotency_key)  # a bad key is a config error before any budget is taken
        policy = self.retry_policy
        budget = self.budget
        # The slow first-use work (imports, key parsing, the session) happens before a unit of budget
        # is taken: the budget counts a call when it is admitted, the gateway when it arrives, and the
        # two must stay within the safety margin even on a busy worker.
        _ = self.signer, self.session
        total = self.settings.call_deadline
        attempt = 0
        deadline_at = 0.0
        while True:
            waited = time.monotonic()
            budget.acquire()  # waits for budget and for any shared 429/418 block; raises past max_wait
            now = time.monotonic()
            # the deadline counts from the first send; a budget wait moves it (nothing is sent meanwhile)
            deadline_at = now + total if not attempt else deadline_at + (now - waited)
            try:
                return self._send_once(biz_type, payload, version, group, idempotency_key, deadline=deadline_at - now)
            except MultiMarketsError as exc:
                block = budget.record(exc)  # a 429/418 now stops every process that shares the key
                if attempt >= policy.max_retries or not retryable_error(exc, idempotent=idempotent):
                    raise
                attempt += 1
                if block is not None:  # the wait is the shared block's, taken in budget.acquire()
                    now = budget.now()
                    left = block.until - now
                    if left > budget.max_wait:
                        raise budget.blocked_error(block, now, 0.0) from None
                    self.log.warning(
                        "MultiMarkets %s failed (%s); retry %d of %d once the apiKey's block ends, in %.1f s.",
                        biz_type,
                        exc,
                        attempt,
                        policy.max_retries,
                        left,
                    )
                    continue
                delay = policy.delay(attempt - 1, exc)
                if not policy.fits(delay, deadline_at - time.monotonic()):
                    self.log.warning(
                        "MultiMarkets %s failed (%s); no retry: the call deadline of %g s (extra 'call_deadline', "
                        "retries included) leaves no time for one.",
                        biz_type,
                        exc,
                        total,
                    )
                    raise
                self.log.warning(
                    "MultiMarkets %s failed (%s); retry %d of %d in %.2f s.",
                    biz_type,
                    exc,
                    attempt,
                    policy.max_retries,
                    delay,
                )
                time.sleep(delay)

    def paginate(
        self,
        biz_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        page_size: int = 100,
        max_pages: int = 1000,
        version: str | None = None,
        group: str | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the records of a paged query, one list per page (``current`` 1, 2, ...; ``size`` ``page_size``).

        Every page is one :meth:`call`, within the apiKey's shared budget. How the answer pages
        (``records``/``list``, ``total``/``totalPage``, or a bare array) comes from the endpoint
        catalogue (the spec's answer schema). It stops at the last page and raises
        :class:`MultiMarketsPagingError` when the query does not add up, so a truncated or
        duplicated result is never returned as complete:

        * the total changes between pages (rows arrived or left while paging);
        * the records that arrived disagree with ``total``, or ``totalPage`` says the query ended
          while the pages were full: the next page is asked for, and it must be empty;
        * a record comes again on a later page (the server ignores ``current``, or rows moved);
        * there are more than ``max_pages`` pages.

        The caller then drops what it got and runs the query again (narrower, or later).
        """
        import hashlib

        from airflow_provider_multimarkets.api.endpoints import endpoint, read_page
        from airflow_provider_multimarkets.exceptions import MultiMarketsPagingError

        spec = endpoint(biz_type)
        if spec is None or spec.paging is None:
            raise MultiMarketsConfigError(
                f"{biz_type} does not page: the vendor's OpenAPI documents no current/size in its body, or no list of "
                "records in its answer. Use call()."
            )
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
            raise MultiMarketsConfigError(f"page_size must be an integer from 1 to 1000, not {page_size!r}.")
        if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
            raise MultiMarketsConfigError(f"max_pages must be a positive integer, not {max_pages!r}.")
        paging, body = spec.paging, dict(payload or {})
        first_total: int | None = None
        received = filled = 0
        seen: dict[bytes, int] = {}  # digest of each record -> the page it came on
        page = 0
        probing = False  # the count says the query ended on a full page: this page must be empty
        while True:
            page += 1
            if page > max_pages:
                raise MultiMarketsPagingError(
                    f"{biz_type}: more than max_pages={max_pages} pages of {page_size} records. Narrow the query (a "
                    "shorter time range) or raise max_pages."
                )
            data = self.call(biz_type, {**body, "current": page, "size": page_size}, version=version, group=group)
            records, total = read_page(paging, data, biz_type)
            if page == 1:
                first_total = total
            elif total is not None and total != first_total:
                raise MultiMarketsPagingError(
                    f"{biz_type}: the {paging.total_key} changed from {first_total} to {total} at page {page}: rows "
                    "arrived or left while paging, so pages may overlap or skip rows. Run the query again, or over "
                    "a closed time range."
                )
            if len(records) > page_size:
                raise MultiMarketsPagingError(
                    f"{biz_type}: page {page} holds {len(records)} records, more than size={page_size}: the server does "
                    "not page as asked. Run the query again; if it repeats, the gateway ignores size."
                )
            if probing and records:
                raise MultiMarketsPagingError(
                    f"{biz_type}: {paging.total_key} says {first_total}, but page {page} holds {len(records)} more "
                    f"records: the server's count is wrong, so the result would be truncated. {received} records "
                    "arrived before; nothing is kept. Run the query again (a shorter time range pages less)."
                )
            for record in records:
                digest = hashlib.blake2b(
                    json.dumps(record, sort_keys=True, default=str).encode("utf-8", "surrogatepass"), digest_size=16
                ).digest()
                earlier = seen.setdefault(digest, page)
                if earlier != page or len(seen) < received + 1:
                    raise MultiMarketsPagingError(
                        f"{biz_type}: a record of page {page} came already on page {earlier}: "
                        f"{received + len(records)} records so far, {len(seen)} distinct. The server ignores "
                        "'current' or rows moved while paging; nothing is kept. Run the query again, over a closed "
                        "time range."
                    )
                received += 1
            if records:
                filled += 1
                yield records
            if probing or len(records) < page_size:
                break
            if first_total is not None and (
                (paging.total_key == "total" and received >= first_total)
                or (paging.total_key == "totalPage" and page >= first_total)
            ):
                probing = True  # the count says that was the last page, but it was full: check the next one
        if paging.total_key == "total" and first_total is not None and received != first_total:
            raise MultiMarketsPagingError(
                f"{biz_type}: total says {first_total} records, {received} arrived. Run the query again."
            )
        if (
            paging.total_key == "totalPage"
            and first_total is not None
            and ((received == 0 and first_total > 1) or (received and filled != first_total))
        ):
            raise MultiMarketsPagingError(
                f"{biz_type}: totalPage says {first_total} pages, {filled} came with records ({received} records "
                f"of size={page_size}). Run the query again."
            )

    def _documented(
        self,
        biz_type: str,
        payload: Mapping[str, Any] | None,
        version: str | None,
        group: str | None,
        *,
        check: bool,
    ) -> tuple[str | None, str | None]:
        """The headers the catalogue documents for ``biz_type`` where the caller gave none; the payload
        checked against the documented body. An undocumented bizType is sent as given, with a warning."""
        from airflow_provider_multimarkets.api.endpoints import check_payload, endpoint

        _check_biz_type(biz_type)
        spec = endpoint(biz_type)
        if spec is None:
            if biz_type not in self._undocumented_warned:
                self._undocumented_warned.add(biz_type)
                self.log.warning(
                    "bizType %s is not in the vendor's OpenAPI (the provider's endpoint catalogue): sent as given, "
                    "without documented version/group headers or a check of its fields. Check the spelling.",
                    biz_type,
                )
            return version, group
        if check and (payload is None or isinstance(payload, Mapping)):
            check_payload(spec, payload)  # None is sent as {}, and checked as {}
        return version or spec.version, group or spec.group

    def _send_once(
        self,
        biz_type: str,
        payload: Mapping[str, Any] | None,
        version: str | None,
        group: str | None,
        idempotency_key: str | None = None,
        *,
        deadline: float | None = None,
    ) -> Any:
        from airflow_provider_multimarkets.api.envelope import parse_response
        from airflow_provider_multimarkets.api.transport import post

        settings = self.settings
        url, headers, body = self.build_request(
            biz_type, payload, version=version, group=group, idempotency_key=idempotency_key
        )
        status, content, retry_after = post(
            self.session,
            url,
            body,
            headers,
            timeout=settings.timeout,
            deadline=settings.call_deadline if deadline is None else max(0.001, deadline),
            max_bytes=settings.max_response_bytes,
            where=self._where,
            total_deadline=settings.call_deadline,
        )
        return parse_response(status, content, retry_after=retry_after, biz_type=biz_type, url=url)

    def get_msg_token(self) -> str:
        """Fetch the message-push token (``getMsgPushToken``); it is masked in every log."""
        from airflow_provider_multimarkets.exceptions import MultiMarketsResponseError

        token = self.call(MSG_TOKEN_BIZ_TYPE, {})
        if not isinstance(token, str) or not token:
            raise MultiMarketsResponseError(
                f"getMsgPushToken succeeded but its data is {type(token).__name__}, not a token string. "
                "Check that the connection host is the Open API base URL."
            )
        mask_secret(token)
        return token

    async def acall(
        self,
        biz_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        group: str | None = None,
        idempotent: bool = True,
        check: bool = True,
        idempotency_key: str | None = None,
    ) -> Any:
        """:meth:`call` from a coroutine (a trigger): the same signing, shared budget, retries,
        payload check, idempotency key and typed errors, run in a worker thread so the event loop
        never blocks (waits for the budget, back-off sleeps and the HTTP exchange included)."""
        from asgiref.sync import sync_to_async

        call = sync_to_async(self.call, thread_sensitive=False)
        return await call(
            biz_type,
            payload,
            version=version,
            group=group,
            idempotent=idempotent,
            check=check,
            idempotency_key=idempotency_key,
        )

    async def aget_msg_token(self) -> str:
        """:meth:`get_msg_token` from a coroutine (see :meth:`acall`); the token is masked."""
        from asgiref.sync import sync_to_async

        from airflow_provider_multimarkets._compat import amask_secret

        token = await sync_to_async(self.get_msg_token, thread_sensitive=False)()
        await amask_secret(token)
        return token

    def test_connection(self) -> tuple[bool, str]:
        """One cheap signed call (``getMsgPushToken``) to check host, keys, clock and IP whitelist.

        The UI's Test button runs it in the Airflow API server: one try, no retries and no waiting
        for budget, so it answers within the connect timeout when the host is down.
        """
        from airflow_provider_multimarkets.api.retry import RetryPolicy

        self._where = "the Airflow API server"
        try:
            self.__dict__["retry_policy"] = RetryPolicy(max_retries=0)
            self.budget.max_wait = 0.0
            self.get_msg_token()
        except MultiMarketsError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI shows this text; keep it short and secret-free
            return False, f"{type(exc).__name__}: {exc}"
        return True, (f"Signed call to {self.settings.base_url} accepted for company {self.settings.company_id}.")

    # ---- connection form (Airflow < 3.2; 3.2+ reads conn-fields from get_provider_info) ------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The same fields as ``conn-fields`` in ``get_provider_info`` (one source), for Airflow < 3.2."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        from airflow_provider_multimarkets.get_provider_info import CONN_FIELDS

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            kinds = spec["schema"]["type"]
            label, description = lazy_gettext(spec["label"]), spec["description"]
            if "boolean" in kinds:
                widgets[name] = BooleanField(label, default=True, description=description)
            elif "integer" in kinds:
                widgets[name] = IntegerField(
                    label,
                    widget=BS3TextFieldWidget(),
                    validators=[Optional(strip_whitespace=True), NumberRange(min=0)],
                    description=description,
                )
            else:
                widgets[name] = StringField(label, widget=BS3TextFieldWidget(), description=description)
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_multimarkets.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }


def _cache_dir(directory: str) -> str | None:
    """The host directory where a Redis budget keeps what the host remembers (``None``: not writable)."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    return directory if os.access(directory, os.W_OK) else None


def _header_value(name: str, value: Any) -> str:
    text = str(value)
    if not _HEADER_VALUE_RE.fullmatch(text):
        raise MultiMarketsConfigError(
            f"The {name} header value {text[:60]!r} is not printable ASCII (headers cannot carry it). Use the "
            f"interface's documented {name}, e.g. {'0.0.1' if name == 'version' else 'tradeApi'}."
        )
    return text


def _idempotency_key(value: Any) -> str:
    if not isinstance(value, str) or not _IDEMPOTENCY_KEY_RE.fullmatch(value):
        shown = value[:60] if isinstance(value, str) else type(value).__name__
        raise MultiMarketsConfigError(
            f"The idempotency key {shown!r} cannot be sent: it must be 1 to 255 printable ASCII characters (a "
            "header value), the same for every try of one operation, e.g. the order's thirdPartyOrder."
        )
    return value


def _check_biz_type(biz_type: str) -> None:
    if not isinstance(biz_type, str) or not _BIZ_TYPE_RE.fullmatch(biz_type):
        raise MultiMarketsConfigError(
            f"biz_type {biz_type!r} is not a bizType: use the resource identifier from the interface's "
            "page, e.g. 'getMsgPushToken', 'customer.app.CustomerWebApiService.findCustomerInfo' or "
            "'thirdExt/randomKey'."
        )


__all__ = ["IDEMPOTENCY_HEADER", "MultiMarketsHook", "new_trace"]
