#!/bin/bash
# EMR bootstrap action of both jobs, run on every node before Spark starts:
#
#   python_env.sh WHEELHOUSE_URI ENV_DIR
#
# makes ENV_DIR a Python 3.11 environment holding exactly the wheels staged at WHEELHOUSE_URI
# by the deployment (`python -m bank_pipeline.wheelhouse`: requirements.txt and its wheels for
# this node's architecture), installed with `pip --no-index --require-hashes`: the node needs
# no route to a package index, and a wheel that is not the locked one is refused. EMR 7 runs Amazon
# Linux 2023, whose system Python is 3.9, too old for the pinned numpy and onnxruntime;
# python3.11 comes from the distribution's own repository. The cluster's spark-defaults
# point spark.pyspark.python and spark.pyspark.driver.python at ENV_DIR/bin/python.
#
# Idempotent: an environment made from the same requirements is kept as it is.
set -euo pipefail

wheelhouse=${1:?usage: python_env.sh WHEELHOUSE_URI ENV_DIR}
env_dir=${2:?usage: python_env.sh WHEELHOUSE_URI ENV_DIR}
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

python=$(command -v python3.11 || true)
if [ -z "$python" ]; then
  $sudo dnf install -y -q python3.11
  python=/usr/bin/python3.11
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels"
if ! aws s3 cp --only-show-errors "${wheelhouse%/}/requirements.txt" "$work/wheels/requirements.txt"; then
  echo "python_env.sh: no requirements.txt at $wheelhouse: the wheelhouse is not staged (python -m bank_pipeline.wheelhouse)" >&2
  exit 2
fi
want=$(sha256sum "$work/wheels/requirements.txt" | cut -d' ' -f1)
if [ -x "$env_dir/bin/python" ] && [ "$(cat "$env_dir/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
  echo "python_env.sh: $env_dir already holds these requirements"
  exit 0
fi
aws s3 cp --recursive --only-show-errors "${wheelhouse%/}/" "$work/wheels/"

$sudo rm -rf "$env_dir"
$sudo mkdir -p "$(dirname "$env_dir")"
$sudo "$python" -m venv --without-pip "$env_dir"
pip_wheel=$(ls "$work"/wheels/pip-*.whl)
# pip runs from its own wheel: the environment gets exactly the pinned set, pip included.
$sudo "$env_dir/bin/python" "$pip_wheel/pip" install --quiet --no-index --no-cache-dir \
  --disable-pip-version-check --require-hashes --find-links "$work/wheels" --requirement "$work/wheels/requirements.txt"
echo "$want" | $sudo tee "$env_dir/.requirements.sha256" >/dev/null
"$env_dir/bin/python" -c "import numpy, pandas, pyarrow, onnxruntime, sklearn, skl2onnx, matplotlib; print('python_env.sh: ready', numpy.__version__, sklearn.__version__, onnxruntime.__version__)"
