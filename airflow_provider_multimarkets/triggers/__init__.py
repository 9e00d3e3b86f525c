"""Airflow triggers of the MultiMarkets provider: the message subscription and the push-event watcher."""
