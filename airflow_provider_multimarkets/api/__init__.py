"""The Open API over HTTP, without Airflow: connection settings, signing, transport, envelopes, retries,
the shared call budget and the endpoint catalogue."""
