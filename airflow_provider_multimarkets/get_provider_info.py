"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point.

Plain data, no imports: since Airflow 3.2 the connection form is built from ``conn-fields`` and
``ui-field-behaviour`` here, without importing the hook.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_multimarkets import __version__

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema"],
    "relabeling": {"host": "Open API base URL", "login": "apiKey", "password": "secretKey (RSA private key)"},
    "placeholders": {
        "host": "https://api.multimarkets.org/openapi-c",
        "login": "1710e1f6b4b54c15bea72e8669966591",
        "password": "base64 PKCS#8 (MIICdQIBADAN...) or PEM",
        "port": "optional",
        "company_id": "439",
        "lang": "en-US",
        "recv_window": "5000",
        "timeout": "30",
        "max_retries": "3",
        "rate_limit_per_minute": "100",
        "rate_limit_redis_conn_id": "redis_default",
        "msg_ws_url": "wss://pre-api-test.cmfbl.com/openapi-c/openMsg/{appId}",
        "app_id": "(default: the company id)",
    },
}

#: The extra fields of the connection form (Airflow 3.2+). No field is required by the form (none shows an
#: error before it is touched): a missing Company ID is reported, naming the field, by the Test button and
#: on first use. No numeric default is written into the schema, so a saved connection does not pin
#: today's defaults: Airflow 3.3.2's form saves every field, an untouched one as ``null``, which the
#: provider reads as its default (each description says it). Verify TLS shows and saves its true default.
CONN_FIELDS: dict[str, Any] = {
    "company_id": {
        "label": "Company ID",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": "Your platform company id, e.g. 439 on the PRE test platform. Needed by every call: "
        "the Test button and the first task say so when it is empty.",
    },
    "lang": {
        "label": "Language",
        "schema": {"type": ["string", "null"], "enum": ["en-US", "zh-CN"]},
        "description": "The lang header. Empty: en-US. Another language tag: write it in the extra JSON.",
    },
    "recv_window": {
        "label": "recvWindow (ms)",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": "How long a signed request stays valid, in ms. Empty: 5000.",
    },
    "timeout": {
        "label": "Timeout (s)",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 600},
        "description": "Read timeout in seconds (the connect timeout is at most 10). Empty: 30.",
    },
    "verify": {
        "label": "Verify TLS",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": "Verify the gateway's TLS certificate (https:// and wss://). Keep it on; a private CA "
        "bundle goes in the extra JSON as its path.",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 10},
        "description": "Retries of idempotent calls on 5xx, 429 and network errors; orders are never retried "
        "blindly. Empty: 3.",
    },
    "rate_limit_per_minute": {
        "label": "Calls per minute",
        "schema": {"type": ["integer", "null"], "minimum": 0},
        "description": "The apiKey's call budget, shared by every process that uses the key (0 = off). "
        "Empty: 100, the gateway's limit.",
    },
    "rate_limit_redis_conn_id": {
        "label": "Redis connection (shared budget)",
        "schema": {"type": ["string", "null"]},
        "description": "An Airflow Redis connection every worker reaches, e.g. redis_default: the call budget and "
        "ban state are then shared by all hosts. Empty: shared by the processes of each host.",
    },
    "msg_ws_url": {
        "label": "Message WebSocket URL",
        "schema": {"type": ["string", "null"]},
        "description": "e.g. wss://pre-api-test.cmfbl.com/openapi-c/openMsg/{appId}. Empty: derived from the "
        "Open API base URL.",
    },
    "app_id": {
        "label": "App ID",
        "schema": {"type": ["string", "null"]},
        "description": "The {appId} of the message WebSocket URL. Empty: the company id.",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-multimarkets",
        "name": "MultiMarkets",
        "description": "Signed calls, message-push subscriptions and reports for the MultiMarkets Open API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MultiMarkets",
                "external-doc-url": "https://docs.multimarkets.org/client-api/open-api/readme",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "MultiMarkets",
                "python-modules": ["airflow_provider_multimarkets.hooks.multimarkets"],
            }
        ],
        "operators": [
            {
                "integration-name": "MultiMarkets",
                "python-modules": [
                    "airflow_provider_multimarkets.operators.msg_token",
                    "airflow_provider_multimarkets.operators.multimarkets",
                    "airflow_provider_multimarkets.operators.msg_subscribe",
                    "airflow_provider_multimarkets.operators.order",
                    "airflow_provider_multimarkets.operators.report",
                    "airflow_provider_multimarkets.operators.query_to_file",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "MultiMarkets",
                "python-modules": ["airflow_provider_multimarkets.sensors.order_status"],
            }
        ],
        "triggers": [
            {
                "integration-name": "MultiMarkets",
                "python-modules": [
                    "airflow_provider_multimarkets.triggers.msg_subscribe",
                    "airflow_provider_multimarkets.triggers.order_status",
                    "airflow_provider_multimarkets.triggers.order_tracking",
                    "airflow_provider_multimarkets.triggers.push_event",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_multimarkets.hooks.multimarkets.MultiMarketsHook",
                "hook-name": "MultiMarkets Open API",
                "connection-type": "multimarkets",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
