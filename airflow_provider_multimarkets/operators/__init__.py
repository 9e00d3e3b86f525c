"""Airflow operators of the MultiMarkets provider."""
