# Airflow 3 with the bundle's Python dependencies, for docker-compose.yaml.
# The bundle itself (dags/, plugins/, spark_jobs/, serving/) is mounted, not copied.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.lock /requirements.lock
RUN pip install --no-cache-dir -r /requirements.lock
