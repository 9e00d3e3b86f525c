"""Airflow sensors of the MultiMarkets provider."""
