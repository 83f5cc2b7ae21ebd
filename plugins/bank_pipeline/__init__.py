"""Operators, checks and settings shared by the bank-marketing DAGs.

Airflow puts plugins/ on sys.path in every component (scheduler, workers,
triggerer), so DAG files and triggers import from here. Nothing in this package
imports pandas, pyspark, scikit-learn or boto3 at module level: DAG files import
it at parse time.
"""
