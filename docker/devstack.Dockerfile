# devstack (moto + EMR steps on local Spark + the image registry) for docker-compose.yaml.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless docker-registry procps \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /requirements.lock
RUN pip install --no-cache-dir -r /requirements.lock
WORKDIR /bundle
