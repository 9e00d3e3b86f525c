"""The push event trigger (AssetWatcher): filters, identity keys, payloads, replay after a restart,
token refresh, serialization. Run against the sandbox over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ORDER_BIZ_TYPE, ORDER_BODY

from airflow_provider_multimarkets._compat import airflow_version
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError
from airflow_provider_multimarkets.messaging.identity import event_identity
from airflow_provider_multimarkets.messaging.push_filter import PushEventFilter, event_payload, replay_tail
from airflow_provider_multimarkets.storage.journal import compact_journal, load_token, save_token
from airflow_provider_multimarkets.trading.fill_ledger import fill_record

AIRFLOW_3 = not airflow_version().startswith("2.")
needs_airflow_3 = pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling needs Airflow 3")


def trade(order_id: int, *, status: str = "2", biz: str = "POSITION_OPEN", seq: int = 1, **params: Any) -> dict:
    return {
        "msgCode": "trade",
        "timestamp": 1_700_000_000_000 + order_id,
        "trace": f"x-{order_id}",
        "seqId": seq,
        "content": {
            "accountId": 1034124,
            "bizType": biz,
            "paramMap": {"orderId": str(order_id), "orderStatus": status, "symbolId": "8390", **params},
        },
    }


# ---- pure logic ---------------------------------------------------------------------------------------


def test_filter_by_kind_biz_type_status_symbol_and_account() -> None:
    default = PushEventFilter.of()
    assert default.matches(trade(1))
    assert not default.matches(trade(1, status="1"))  # received: not final
    assert not default.matches(trade(1, status="3"))  # partially completed: not final
    assert default.matches(trade(1, status="1", biz="POSITION_OPEN_FAIL"))  # a failed order is final
    assert not default.matches({"msgCode": "notice", "content": {"updateType": 1}})
    assert PushEventFilter.of(msg_codes=None, final_only=False).matches(trade(1, status="1"))
    opens = PushEventFilter.of(biz_types="POSITION_OPEN,POSITION_OPEN_FAIL")
    assert opens.matches(trade(1)) and not opens.matches(trade(1, biz="POSITION_CLOSE"))
    assert PushEventFilter.of(symbol_ids=[8390]).matches(trade(1))
    assert not PushEventFilter.of(symbol_ids=[1]).matches(trade(1))
    assert PushEventFilter.of(account_ids=1034124).matches(trade(1))
    assert not PushEventFilter.of(account_ids=["7"]).matches(trade(1))
    odd = trade(1)
    odd["content"]["paramMap"]["orderStatus"] = ["2"]  # a list where a status belongs: no match, no crash
    assert PushEventFilter.of(biz_types=["POSITION_OPEN"]).matches(odd)
    assert not PushEventFilter.of().matches({"msgCode": ["trade"]})


def test_filter_is_json_and_round_trips() -> None:
    original = PushEventFilter.of(biz_types=["B", "A"], symbol_ids=[2, "1"], final_only=False)
    as_json = original.as_json()
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json["biz_types"] == ["A", "B"] and as_json["symbol_ids"] == ["1", "2"]
    assert PushEventFilter.of(**as_json) == original


def test_identity_is_stable_across_reconnects_and_tells_distinct_pushes_apart() -> None:
    first = trade(10, seq=1)
    again = trade(10, seq=77)  # the same push, sent again on another connection
    assert event_identity(first) == event_identity(again) == "trade:10:-:POSITION_OPEN:2"
    assert event_identity(trade(10, dealId="5")) != event_identity(trade(10, dealId="6"))  # two partial fills
    assert event_identity(trade(10, status="4")) != event_identity(first)
    assert event_identity(trade(11)) != event_identity(first)
    notice = {"msgCode": "notice", "seqId": 1, "timestamp": 5, "content": {"updateType": 1}}
    key = event_identity(notice)
    assert key.startswith("sha1:") and key == event_identity({**notice, "seqId": 9})
    assert key != event_identity({**notice, "timestamp": 6})
    weird = trade(10)
    weird["content"]["paramMap"]["orderId"] = "a b/c"
    assert " " not in event_identity(weird) and "/" not in event_identity(weird)


def test_payload_is_compact_json_and_bounded() -> None:
    payload = event_payload(trade(10))
    assert payload["identity"] == "trade:10:-:POSITION_OPEN:2" and payload["bizType"] == "POSITION_OPEN"
    assert payload["content"]["paramMap"]["orderId"] == "10" and "seqId" not in payload
    json.dumps(payload, allow_nan=False)
    big = trade(10, note="x" * 5000)
    cut = event_payload(big, max_bytes=1000)
    assert cut["content"] is None and cut["content_omitted_bytes"] > 5000
    assert cut["identity"] == event_identity(big)
    assert event_payload(trade(10), replayed=True)["replayed"] is True
    record = fill_record(event_payload(trade(10, dealPrice="1.5", dealAmount="0.1", symbolName="EURUSD")))
    assert record == {
        "identity": "trade:10:-:POSITION_OPEN:2",
        "order_id": "10",
        "symbol": "EURUSD",
        "price": "1.5",
        "lots": "0.1",
        "status": "2",
        "biz_type": "POSITION_OPEN",
        "account_id": 1034124,
        "push_time_ms": 1_700_000_000_010,
    }


def test_replay_takes_the_recent_tail_only() -> None:
    lines = [json.dumps(trade(i)) + "\n" for i in range(0, 100_000, 1000)]  # one push per second
    lines.insert(3, "not json\n")
    replay = replay_tail(lines, seconds=5, max_pushes=1000)
    assert [int(f["content"]["paramMap"]["orderId"]) for f in replay] == list(range(94_000, 100_000, 1000))
    assert len(replay_tail(lines, seconds=1e9, max_pushes=7)) == 7  # bounded
    assert replay_tail([], seconds=5, max_pushes=10) == []


def test_journal_is_cut_to_its_tail(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_text("".join(f'{{"n":{i}}}\n' for i in range(1000)) + '{"partial"')
    assert not compact_journal(str(journal), max_bytes=10**6, keep_lines=10)
    assert compact_journal(str(journal), max_bytes=100, keep_lines=10)
    assert journal.read_text().splitlines() == [f'{{"n":{i}}}' for i in range(990, 1000)]
    assert not compact_journal(str(tmp_path / "missing.jsonl"), max_bytes=1, keep_lines=1)


def test_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "w.token"
    assert load_token(str(path)) is None
    save_token(str(path), "abc-push")
    assert load_token(str(path)) == "abc-push"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# ---- the trigger ---------------------------------------------------------------------------------------


def test_on_airflow_2_the_module_imports_and_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.triggers import push_event

    if not AIRFLOW_3:
        assert push_event.EVENT_SCHEDULING is False
    monkeypatch.setattr(push_event, "EVENT_SCHEDULING", False)
    with pytest.raises(MultiMarketsConfigError, match=r"needs Airflow 3\.0 or later"):
        push_event.MultiMarketsPushEventTrigger()


@needs_airflow_3
def test_serialize_round_trip_and_no_secret_in_repr(tmp_path: Path) -> None:
    from airflow.triggers.base import BaseEventTrigger

    from airflow_provider_multimarkets.triggers.push_event import MultiMarketsPushEventTrigger

    trigger = MultiMarketsPushEventTrigger(
        multimarkets_conn_id="mm", trade_types=2, biz_types="POSITION_OPEN", symbol_ids=[8390], state_dir=str(tmp_path)
    )
    assert isinstance(trigger, BaseEventTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_multimarkets.triggers.push_event.MultiMarketsPushEventTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    again = MultiMarketsPushEventTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert again.paths() == trigger.paths()  # the same watcher finds its journal and token again
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again.serialize())
    other = MultiMarketsPushEventTrigger(**{**kwargs, "biz_types": ["POSITION_CLOSE"]})
    assert other.paths() != trigger.paths()
    assert "token" not in repr(trigger).lower()
    with pytest.raises(MultiMarketsConfigError, match="replay_max"):
        MultiMarketsPushEventTrigger(replay_max=0)


class Watch:
    """Runs a trigger's ``run()`` on its own thread and event loop, collecting event payloads."""

    def __init__(self, trigger: Any) -> None:
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def consume() -> None:
            async for event in self.trigger.run():
                self.events.append(event.payload)

        self._task = self._loop.create_task(consume())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self._loop.run_until_complete(self.trigger.cleanup())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def wait(self, what: str, check: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError(f"the trigger failed: {self.error!r}")
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events: {self.events}")

    def __exit__(self, *exc: object) -> None:
        if self._task is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop closed meanwhile: the run is over
                pass
        self._thread.join(20)
        assert not self._thread.is_alive()


def _trigger(tmp_path: Path, **kwargs: Any) -> Any:
    from airflow_provider_multimarkets.triggers.push_event import MultiMarketsPushEventTrigger

    kwargs.setdefault("state_dir", str(tmp_path / "events"))
    kwargs.setdefault("reconnect_backoff", 0.05)
    kwargs.setdefault("ping_interval", 1.0)
    return MultiMarketsPushEventTrigger(**kwargs)


def _place(n: int) -> list[str]:
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    with MultiMarketsHook() as hook:
        return [str(hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)["orderId"]) for _ in range(n)]


def _logins(sandbox: Any) -> int:
    return int(sandbox.app.ws_stats["logins"])


def _subscribed(sandbox: Any, logins: int = 1) -> bool:
    """At least ``logins`` logins, and the newest token's stream is connected and subscribed to trade type 2."""
    streams = list(sandbox.state.streams.values())
    return _logins(sandbox) >= logins and bool(streams) and streams[-1].attached and "2" in streams[-1].trade_types


@needs_airflow_3
def test_one_event_per_fill_with_its_own_push(mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path) -> None:
    with Watch(_trigger(tmp_path)) as watch:
        watch.wait("the subscription", lambda: _subscribed(sandbox))
        orders = _place(5)
        watch.wait("5 events", lambda: len(watch.events) >= 5)
        time.sleep(0.5)
    assert [e["content"]["paramMap"]["orderId"] for e in watch.events] == orders
    assert [e["identity"] for e in watch.events] == [f"trade:{o}:{int(o) + 5000}:POSITION_OPEN:2" for o in orders]
    assert all(e["msgCode"] == "trade" and "replayed" not in e for e in watch.events)
    assert watch.trigger.tokens_fetched == 1
    calls = [c["biz"] for c in sandbox.state.calls_since(0)]
    assert calls.count("getMsgPushToken") == 1  # its own token, through the signed call


@needs_airflow_3
def test_filters_decide_which_pushes_fire(mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path) -> None:
    with Watch(_trigger(tmp_path, symbol_ids=["1"])) as watch:
        watch.wait("the subscription", lambda: _subscribed(sandbox))
        _place(3)
        watch.wait("the pushes in the journal", lambda: _journal_lines(watch.trigger) >= 3)
        time.sleep(0.3)
    assert watch.events == []  # symbol 8390 was filled, the watcher wants symbol 1


def _journal_lines(trigger: Any) -> int:
    journal = Path(trigger.paths()[0])
    return len(journal.read_text().splitlines()) if journal.exists() else 0


@needs_airflow_3
def test_a_refused_token_is_replaced_and_the_watch_goes_on(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    with Watch(_trigger(tmp_path)) as watch:
        watch.wait("the subscription", lambda: _subscribed(sandbox))
        first = _place(2)
        watch.wait("2 events", lambda: len(watch.events) >= 2)
        answer = requests.post(f"http://127.0.0.1:{sandbox.port}/_sandbox/tokens/expire", timeout=10).json()
        assert answer == {"expired": 1, "closed": 1}
        watch.wait("a new token and login", lambda: watch.trigger.tokens_fetched == 2 and _subscribed(sandbox, 2))
        second = _place(2)
        watch.wait("4 events", lambda: len(watch.events) >= 4)
    assert [e["content"]["paramMap"]["orderId"] for e in watch.events] == first + second
    # strict mode: the close has code 1000 (4001 has no source), so the watcher reconnects, the login with
    # the dead token is refused (subscribe_fail, the documented answer), and a new token is fetched
    assert sandbox.app.ws_stats["refused"] == 1
    token_file = Path(watch.trigger.paths()[1])
    assert load_token(str(token_file)) == list(sandbox.state.streams)[-1]


@needs_airflow_3
def test_refused_at_login_too(mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path) -> None:
    trigger = _trigger(tmp_path)
    save_token(trigger.paths()[1], "stale-token-from-a-previous-run")
    with Watch(trigger) as watch:
        watch.wait("a new token", lambda: watch.trigger.tokens_fetched == 1 and _subscribed(sandbox))
        orders = _place(1)
        watch.wait("1 event", lambda: len(watch.events) >= 1)
    assert sandbox.app.ws_stats["refused"] == 1
    assert watch.events[0]["content"]["paramMap"]["orderId"] == orders[0]


@needs_airflow_3
def test_a_token_refused_again_and_again_ends_with_a_clear_error(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    sandbox.state.faults.ws.refuse_login = True
    with Watch(_trigger(tmp_path)) as watch:
        deadline = time.monotonic() + 60
        while watch.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert watch.error is not None
    assert "refused 4 msg tokens in a row" in str(watch.error) and "app_id" in str(watch.error)
    assert watch.trigger.tokens_fetched == 4


@needs_airflow_3
def test_restart_yields_recent_pushes_again_with_the_same_identity_and_resumes_the_stream(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    with Watch(_trigger(tmp_path)) as watch:
        watch.wait("the subscription", lambda: _subscribed(sandbox))
        before = _place(3)
        watch.wait("3 events", lambda: len(watch.events) >= 3)
    first_run = list(watch.events)
    # while no trigger runs, the platform queues pushes for the token's stream
    during = _place(2)
    with Watch(_trigger(tmp_path)) as again:
        again.wait("the replay and the queued pushes", lambda: len(again.events) >= 5)
        time.sleep(0.5)
    replayed = [e for e in again.events if e.get("replayed")]
    fresh = [e for e in again.events if not e.get("replayed")]
    assert [e["identity"] for e in replayed] == [e["identity"] for e in first_run]  # same keys
    assert [e["content"]["paramMap"]["orderId"] for e in fresh] == during  # nothing missed
    assert again.trigger.tokens_fetched == 0  # the same token, the same stream
    assert {e["content"]["paramMap"]["orderId"] for e in again.events} == set(before + during)


@needs_airflow_3
def test_pushes_sent_again_after_a_drop_fire_once(mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path) -> None:
    with Watch(_trigger(tmp_path)) as watch:
        watch.wait("the subscription", lambda: _subscribed(sandbox))
        orders = _place(3)
        watch.wait("3 events", lambda: len(watch.events) >= 3)
        requests.post(f"http://127.0.0.1:{sandbox.port}/_sandbox/ws/send", json={"kind": "disconnect"}, timeout=10)
        watch.wait("a new login", lambda: _logins(sandbox) >= 2, 60)
        more = _place(2)
        watch.wait("5 events", lambda: len(watch.events) >= 5, 60)
        time.sleep(1.0)
    ids = [e["content"]["paramMap"]["orderId"] for e in watch.events]
    assert ids == orders + more  # the redelivered pushes were recognised: no second event


def test_the_async_call_never_blocks_the_event_loop_and_shares_the_budget(
    mm_conn: dict[str, Any], sandbox: Any
) -> None:
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
    from airflow_provider_multimarkets.sandbox.faults import HttpFault

    sandbox.state.faults.add("getMsgPushToken", HttpFault(delay=1.0, after_processing=True, times=1))

    async def main() -> tuple[str, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        hook = MultiMarketsHook()
        token = await hook.aget_msg_token()
        task.cancel()
        return token, ticks, hook.budget.limit

    token, ticks, limit = asyncio.run(main())
    assert token.endswith("push") and ticks >= 20  # the loop ran on while the call waited a second
    assert limit == 100  # the apiKey's one budget (documented limit), as for every other call
