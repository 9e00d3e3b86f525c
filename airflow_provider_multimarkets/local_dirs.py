"""Where the provider keeps files on a host (pure logic: no Airflow import)."""

from __future__ import annotations

import os


def local_dir(env_var: str, subdir: str) -> str:
    """``$<env_var>`` when set, else ``$AIRFLOW_HOME/<subdir>`` (``~/airflow/<subdir>`` by default)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return os.path.join(home, subdir)
