"""Files the provider writes, without Airflow: the push log and its object-store segments, table files, the
watcher journal and the local directories."""
