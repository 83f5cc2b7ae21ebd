#!/bin/sh
# /lambda-entrypoint.sh of the local Lambda base image (devstack/containers/lambda_image.py), laid
# out as AWS's Python base images: the image's CMD (the handler, e.g. handler.handler)
# is the one argument. On Lambda, AWS_LAMBDA_RUNTIME_API is set and the runtime
# interface client talks to Lambda's Runtime API directly; anywhere else the Runtime
# Interface Emulator (RIE) serves the Runtime API and the invoke endpoint
# POST /2015-03-31/functions/function/invocations, and runs the client itself.
#
# Local addition (not in AWS's script): RIE_ADDRESS and RIE_RUNTIME_API_ADDRESS choose
# where the RIE listens (defaults 0.0.0.0:8080 and 127.0.0.1:9001), so several
# containers can share the host's network namespace.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie \
    --runtime-interface-emulator-address "${RIE_ADDRESS:-0.0.0.0:8080}" \
    ${RIE_RUNTIME_API_ADDRESS:+--runtime-api-address "$RIE_RUNTIME_API_ADDRESS"} \
    /usr/bin/python3 -m awslambdaric "$@"
else
  exec /usr/bin/python3 -m awslambdaric "$@"
fi
