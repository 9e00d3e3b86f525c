"""Airflow triggers of the MultiMarkets provider: the message subscription, order tracking and status, and the push-event watcher."""
