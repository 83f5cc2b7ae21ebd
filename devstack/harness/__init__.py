"""The Airflow harness: the environment a local Airflow gets, `make up`'s stack, the MWAA-like
environment for install tests, and `make demo`."""
