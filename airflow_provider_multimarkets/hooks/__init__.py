"""Airflow hooks of the MultiMarkets provider: ``MultiMarketsHook`` (signed Open API calls)."""
