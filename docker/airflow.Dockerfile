# Airflow 3 with the bundle installed as a deployment installs it: the wheel plus
# requirements.txt, with Airflow's constraints for this Airflow and Python. Only dags/
# and plugins/bank_pipeline_plugin.py are mounted by docker-compose.yaml.
FROM python:3.11-slim-bookworm AS wheel
RUN pip install --no-cache-dir uv
COPY . /src
RUN uv build --wheel --out-dir /dist /src

FROM apache/airflow:3.3.2-python3.11
ARG AIRFLOW_VERSION=3.3.2
COPY --from=wheel /dist/ /tmp/dist/
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements.txt /tmp/dist/*.whl \
      --constraint "https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-3.11.txt"
