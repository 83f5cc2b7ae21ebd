"""devstack's Lambda invoke through the AWS API: cold and warm, 1 and 1,000 records, as a client sees it.

    .venv/bin/python -m bench.lambda_invoke_bench [--functions 5] [--warm 100] [--out lambda_invoke]

Starts devstack, seeds the serving base image (seed_release) and appends the
model of build/bench/model (trained if missing) as a release does, then per
function (``--functions`` fresh ones): CreateFunction and PublishVersion, each
waited for until Active (devstack pulls the image meanwhile, as Lambda
prepares it), then boto3 ``invoke`` of the version: the first invoke (cold:
devstack starts the execution environment) and ``--warm`` more, for one record
and for 1,000.
Client wall times: boto3 -> moto -> devstack's Lambda -> the handler and back.

Only seed_release, the registry API and boto3 are used, so the same file runs
on an older checkout (copy it there, run it with that checkout's devstack) for
a before/after. Writes build/bench/<out>.json.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bank_pipeline.utils import oci, oci_image, oci_layer
from bench.common import OUT, REPO, quiet_check, write_result
from devstack import Devstack
from devstack.aws.infra import provision
from devstack.harness.airflow_env import IMAGE_REPOSITORY, LAMBDA_ROLE_ARN, SERVING_BASE_TAG, seed_release

BANK = REPO / "data" / "bank" / "bank-full.csv"
MODEL_DIR = OUT / "model"
INT_FIELDS = {"age", "balance", "day", "campaign", "pdays", "previous"}


def records(n: int) -> list[dict[str, Any]]:
    with BANK.open(newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle, delimiter=";"), n))
    return [{k: int(v) if k in INT_FIELDS else v for k, v in row.items() if k not in ("duration", "y")} for row in rows]


def percentiles(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    if len(ms) < 2:
        return {"runs": len(ms), "p50_ms": round(ms[0], 3)}
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"runs": len(ms), "p50_ms": round(cuts[49], 3), "p90_ms": round(cuts[89], 3), "p99_ms": round(cuts[98], 3),
            "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}  # fmt: skip


def ensure_model() -> Path:
    if not (MODEL_DIR / "model.onnx").is_file():
        from bank_ml import artifacts, data, release

        candidate = release.train_candidate(data.features_from_csv(BANK))
        artifacts.write_model_files(MODEL_DIR, candidate.onnx_bytes, candidate.threshold)
    return MODEL_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=5, help="fresh functions: cold invokes")
    parser.add_argument("--warm", type=int, default=100, help="warm invokes per payload on the first function")
    parser.add_argument("--out", default="lambda_invoke")
    args = parser.parse_args(argv)
    busy = quiet_check()
    model_dir = ensure_model()
    events = {"1_record": records(1)[0], "1000_records": {"records": records(1000)}}
    cold: dict[str, list[float]] = {name: [] for name in events}
    warm: dict[str, list[float]] = {name: [] for name in events}
    with tempfile.TemporaryDirectory() as tmp, Devstack(state_dir=Path(tmp), port=0) as ds:
        provision(ds)  # the template: the Lambda role
        started = time.monotonic()
        seed_release(ds.registry_url)
        seed_s = time.monotonic() - started
        files = {f"{oci_layer.MODEL_DIR}/{n}": (model_dir / n).read_bytes() for n in ("model.onnx", "model.json")}
        pushed = oci_image.append_layer(oci.RegistryClient(ds.registry_url), IMAGE_REPOSITORY, SERVING_BASE_TAG,
                                        oci_layer.model_layer(files), "bench",
                                        {"BANK_MODEL_DIR": "/" + oci_layer.MODEL_DIR})  # fmt: skip
        image = f"{ds.registry_url}/{IMAGE_REPOSITORY}@{pushed.digest}"
        lam = ds.client("lambda")

        def invoke(name: str, version: str, event: Any) -> float:
            started = time.perf_counter()
            resp = lam.invoke(FunctionName=name, Qualifier=version, Payload=json.dumps(event).encode())
            body = json.loads(resp["Payload"].read())
            seconds = time.perf_counter() - started
            assert "FunctionError" not in resp and body["statusCode"] == 200, body
            return seconds * 1000

        for i in range(args.functions):
            for payload, event in events.items():
                name = f"bench-{payload.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
                lam.create_function(FunctionName=name, Role=LAMBDA_ROLE_ARN, PackageType="Image",
                                    Code={"ImageUri": image}, MemorySize=1024, Timeout=30)  # fmt: skip
                lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
                version = lam.publish_version(FunctionName=name)["Version"]
                lam.get_waiter("published_version_active").wait(
                    FunctionName=name, Qualifier=version, WaiterConfig={"Delay": 0.2}
                )
                cold[payload].append(invoke(name, version, event))
                if i == 0:
                    for _ in range(3):
                        invoke(name, version, event)
                    warm[payload] = [invoke(name, version, event) for _ in range(args.warm)]
                lam.delete_function(FunctionName=name)
    result = {
        "machine_busy_percent_before": busy,
        "seed_release_seconds": round(seed_s, 2),
        "how": "boto3 invoke of a published version through devstack, client wall time; cold = the version's first invoke",
        "cold": {name: percentiles(s) for name, s in cold.items()},
        "warm": {name: percentiles(s) for name, s in warm.items()},
    }
    for name in events:
        print(f"{name}: cold p50 {result['cold'][name]['p50_ms']} ms, warm p50 {result['warm'][name]['p50_ms']} ms "
              f"p99 {result['warm'][name].get('p99_ms')} ms")  # fmt: skip
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
