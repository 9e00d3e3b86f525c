"""Apache Airflow provider for the MultiMarkets Open API.

Kept import-free on purpose: DAG files import the operators every parse cycle.
"""

__version__ = "0.1.0"
