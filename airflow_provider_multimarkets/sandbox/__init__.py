"""A local MultiMarkets Open API simulator (HTTP gateway + message WebSocket) for demos and tests.

Install with the ``[sandbox]`` extra. Never imported by the hooks, operators or triggers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_multimarkets.sandbox.faults import HttpFault, WsFaults
    from airflow_provider_multimarkets.sandbox.server import Sandbox
    from airflow_provider_multimarkets.sandbox.state import SandboxConfig

__all__ = ["HttpFault", "Sandbox", "SandboxConfig", "WsFaults"]


def __getattr__(name: str) -> Any:
    if name == "Sandbox":
        from airflow_provider_multimarkets.sandbox.server import Sandbox

        return Sandbox
    if name == "SandboxConfig":
        from airflow_provider_multimarkets.sandbox.state import SandboxConfig

        return SandboxConfig
    if name in ("HttpFault", "WsFaults"):
        from airflow_provider_multimarkets.sandbox import faults

        return getattr(faults, name)
    raise AttributeError(name)
