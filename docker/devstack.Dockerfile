# devstack (moto + EMR steps on local Spark + the image registry) for docker-compose.yaml:
# the dev environment of uv.lock, with the bundle installed (devstack uses its image library).
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless docker-registry procps \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir uv
COPY . /bundle
WORKDIR /bundle
ENV UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN uv sync --frozen --all-extras --no-editable
