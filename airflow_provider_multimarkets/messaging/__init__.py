"""The message WebSocket, without Airflow: the socket client, its frames, push identities and push filters."""
