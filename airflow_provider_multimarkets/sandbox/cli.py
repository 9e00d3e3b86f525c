"""``multimarkets-sandbox``: run the sandbox in the foreground and print the Airflow connection."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from airflow_provider_multimarkets.sandbox.faults import HttpFault


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multimarkets-sandbox",
        description="A local MultiMarkets Open API simulator: HTTP gateway and message WebSocket on one port.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8085, help="port (default 8085; 0 picks a free one)")
    p.add_argument("--key-file", help="JSON file with apiKey/privateKey/pubKey; created when missing")
    p.add_argument("--company-id", type=int, default=439)
    p.add_argument("--seed", type=int, default=7, help="seed of the simulated prices and trades")
    p.add_argument("--trade-stream-rate", type=float, default=0.0, help="synthetic trade pushes per second (0: off)")
    p.add_argument("--trade-stream-limit", type=int, default=None, help="stop the synthetic stream after N pushes")
    p.add_argument(
        "--trade-stream-types",
        default=None,
        metavar="TYPES",
        help="trade types the synthetic stream pushes to, e.g. 1 (default: every subscribed one); with 1, "
        "trade type 2 carries only the orders you place",
    )
    p.add_argument(
        "--burst-after-subscribe", type=int, default=0, help="benchmark: N pushes as fast as possible after a subscribe"
    )
    p.add_argument("--rate-limit", type=int, default=100, help="calls per window per apiKey before a 429")
    p.add_argument("--rate-window", type=float, default=60.0, help="rate-limit window in seconds")
    p.add_argument("--ban-seconds", type=float, default=300.0, help="first ban after calling on past a 429")
    p.add_argument("--ping-timeout", type=float, default=60.0, help="close message sockets silent this long")
    p.add_argument("--gateway-error-status", type=int, default=200, help="HTTP status of gateway error envelopes")
    p.add_argument("--signature-mode", choices=("canonical", "raw"), default="canonical")
    p.add_argument(
        "--sign-charset",
        choices=("UTF-8", "GBK", "ISO-8859-1"),
        default="UTF-8",
        help="the charset the gateway signs with (a Java JVM's default charset)",
    )
    p.add_argument(
        "--account-list",
        choices=("map", "array"),
        default="map",
        help="findCustomerInfo.accountList: the schema's object (map) or the examples' array",
    )
    p.add_argument(
        "--no-version-check", action="store_true", help="do not refuse a call without its documented version/group"
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="BIZTYPE:OPTS",
        help="scripted answer, e.g. getMsgPushToken:status=503,times=2 or *:delay=3 (repeatable)",
    )
    p.add_argument("--ws-drop-after", type=int, help="drop each message connection after N pushes")
    p.add_argument("--ws-malformed-every", type=int, help="send a malformed frame before every Nth push")
    p.add_argument("--ws-refuse-login", action="store_true", help="refuse every message login")
    p.add_argument("--ws-refuse-subscribe", action="store_true", help="answer subscribe_asset with an error code")
    p.add_argument(
        "--strict",
        action="store_true",
        help="message WebSocket: send only the frames the docs and the vendor's H5 client show "
        "(no pong, no subscribe_asset answer, every close 1000)",
    )
    p.add_argument(
        "--pnl-every", type=float, default=0.0, help="seconds between f(...)/g(...) profit-and-loss frames (0: off)"
    )
    p.add_argument("--order-push-delay", type=float, default=0.0, help="seconds between an order's answer and its push")
    p.add_argument("--connection-file", help="also write the connection JSON to this file")
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from airflow_provider_multimarkets.sandbox.keys import load_or_create
        from airflow_provider_multimarkets.sandbox.server import Sandbox
        from airflow_provider_multimarkets.sandbox.state import SandboxConfig
    except ImportError as exc:
        print(
            f"multimarkets-sandbox needs the [sandbox] extra ({exc.name or exc} is missing): "
            "pip install 'airflow-provider-multimarkets[sandbox]'",
            file=sys.stderr,
        )
        return 2

    # Our own handler: importing Airflow (through the provider's modules) replaces root logging config.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s sandbox %(levelname)s %(message)s"))
    sandbox_log = logging.getLogger("multimarkets.sandbox")
    sandbox_log.handlers[:] = [handler]
    sandbox_log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    sandbox_log.propagate = False
    config = SandboxConfig(
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        ban_seconds=args.ban_seconds,
        ping_timeout=args.ping_timeout,
        gateway_error_status=args.gateway_error_status,
        signature_mode=args.signature_mode,
        sign_charset=args.sign_charset,
        account_list=args.account_list,
        check_version_group=not args.no_version_check,
        trade_stream_rate=args.trade_stream_rate,
        trade_stream_limit=args.trade_stream_limit,
        trade_stream_types=(
            frozenset(t.strip() for t in args.trade_stream_types.split(",") if t.strip())
            if args.trade_stream_types
            else None
        ),
        burst_after_subscribe=args.burst_after_subscribe,
        order_push_delay=args.order_push_delay,
        pnl_interval=args.pnl_every,
        seed=args.seed,
        strict_frames=args.strict,
    )
    keys: dict[str, Any] = load_or_create(args.key_file) if args.key_file else {}
    sandbox = Sandbox(
        config,
        host=args.host,
        port=args.port,
        api_key=keys.get("apiKey"),
        private_key=keys.get("privateKey"),
        public_key=keys.get("pubKey"),
        company_id=args.company_id,
    )
    for spec in args.fault:
        biz_type, fault = HttpFault.parse(spec)
        sandbox.state.faults.add(biz_type, fault)
    ws = sandbox.state.faults.ws
    ws.drop_after = args.ws_drop_after
    ws.malformed_every = args.ws_malformed_every
    ws.refuse_login = args.ws_refuse_login
    ws.refuse_subscribe = args.ws_refuse_subscribe
    sandbox.start()
    conn = sandbox.connection_json()
    if args.connection_file:
        with open(args.connection_file, "w") as handle:
            handle.write(conn)
    print(f"MultiMarkets sandbox listening on {sandbox.base_url} (message WebSocket {sandbox.ws_url})")
    fields = json.loads(conn)
    print("Point Airflow at it with:")
    print(f"export AIRFLOW_CONN_MULTIMARKETS_DEFAULT='{conn}'")
    print(
        "or, in the UI's connection form (type MultiMarkets): Open API base URL "
        f"{fields['host']}, Port {fields['port']}, apiKey {fields['login']}, secretKey (RSA private key) "
        f"{'--key-file ' + args.key_file + ' (privateKey)' if args.key_file else 'the password above'}, "
        f"Company ID {fields['extra']['company_id']}, Message WebSocket URL {fields['extra']['msg_ws_url']}; "
        "Verify TLS does not matter (the sandbox is plain http).",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sandbox.stop()
    print(json.dumps({"stopped": True, **sandbox.state.counts()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
