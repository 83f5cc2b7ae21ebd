#!/bin/bash
# EMR bootstrap action of bank_batch_score, run on every node before Spark starts.
#
# EMR 7 (Amazon Linux 2023) ships Python 3.9; the scorer needs the libraries the
# project is locked to (numpy 2.4 and onnxruntime 1.32 need Python >= 3.11), so
# this installs Python 3.11 from the distribution and the scorer's libraries into
# it. The cluster's spark-env classification sets PYSPARK_PYTHON=/usr/bin/python3.11
# for the driver and the executors. The pins are requirements.lock's: a test keeps
# them equal. For clusters without internet access, point pip at a mirror
# (PIP_INDEX_URL) or bake these into a custom AMI.
set -euo pipefail

sudo dnf install -y -q python3.11 python3.11-pip
sudo /usr/bin/python3.11 -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    numpy==2.4.6 \
    pandas==2.3.3 \
    pyarrow==26.0.1 \
    onnxruntime==1.32.0 \
    flatbuffers==25.12.19 \
    packaging==26.3 \
    protobuf==6.33.6 \
    python-dateutil==2.9.0.post0 \
    pytz==2026.6 \
    tzdata==2026.6 \
    six==1.17.0
