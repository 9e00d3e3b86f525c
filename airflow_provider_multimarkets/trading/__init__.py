"""Trading logic, without Airflow: the client order id, the fill ledger, reports and period reconciliation."""
