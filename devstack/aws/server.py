"""``python -m devstack serve``: moto in server mode, the EMR step executor, the registry.

One process: moto's ThreadedMotoServer on 127.0.0.1 (S3, EMR, ECR, Lambda,
IAM, STS, CloudFormation, ... all on one endpoint), ``devstack.aws.emr_executor.Executor``, which must
share the process to see moto's EMR backend objects, and the patch of moto's
Lambda (``devstack.aws.awslambda``) that runs image functions as podman containers
(``devstack.containers.lambda_containers``, removed when the server stops) and serves their
function URLs (``devstack.aws.function_urls``); plus one child process, the image
registry (``devstack.aws.registry``), in its own process group, behind a proxy
thread that reads moto's ECR repositories for immutable tags.

IAM is enforced (``devstack.aws.iam``): every request is checked against its
signer's policies. devstack's own admin user is made in-process before the
server listens; its keys are in the state file (``Devstack.client`` uses them).
``iam=False`` (``serve --no-iam``) lets any credentials do anything, as moto does by default.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from devstack import procs, read_state, remove_state, write_state


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def node_root(state_dir: Path) -> Path:
    """The EMR node's directories (devstack.aws.emr_node): ``<state>/node``, except for a state dir inside
    the checkout (make demo's, make up's), whose node gets one under the machine's cache instead: the
    node's Python holds third-party packages (onnxruntime edits sys.path in its own modules) that
    have no place in the source tree, and the cache keeps it across runs as the state dir did."""
    import hashlib

    from devstack import REPO_ROOT
    from devstack.cache import cache_dir

    state = state_dir.resolve()
    if not state.is_relative_to(REPO_ROOT):
        return state / "node"
    key = hashlib.sha256(str(state.relative_to(REPO_ROOT)).encode()).hexdigest()[:12]
    return cache_dir() / "nodes" / f"{state.name}-{key}"


def enforce_iam(enabled: bool) -> None:
    """moto's settings for IAM, as environment variables: moto.settings reads them when first imported
    (and the managed policies' when the IAM backend is first made).

    INITIAL_NO_AUTH_ACTION_COUNT=0: no request goes unchecked (devstack's admin is
    made through moto's backend, not by requests). The AWS managed policies are
    loaded so that templates can attach them (AmazonEMRServicePolicy_v2).
    """
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0" if enabled else "inf"
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"


def serve(
    port: int,
    state_dir: Path,
    registry_port: int = 0,
    host: str = "127.0.0.1",
    public_host: str = "127.0.0.1",
    iam: bool = True,
) -> int:
    """Serve until SIGTERM/SIGINT; then kill running steps and the registry, stop, remove the state file.

    host: the address to bind (0.0.0.0 in compose); public_host: the name other
    containers use for the registry in image references (its compose service name);
    iam: enforce IAM (devstack.aws.iam).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise
    state_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(state_dir)
    if state and state.get("pid") != os.getpid() and procs.alive(int(state["pid"])):
        print(f"devstack: already running (pid {state['pid']}, {state.get('endpoint_url')})", file=sys.stderr)
        return 2
    # ThreadedMotoServer waits forever if its thread fails to bind: check first.
    if port and not _port_free(port):
        print(f"devstack: port {port} on 127.0.0.1 is in use", file=sys.stderr)
        return 2
    from devstack.aws.registry import Registry, RegistryUnavailable, moto_tag_immutable

    # Tags are immutable where moto's ECR repository of the same name says so (ECR's IMMUTABLE).
    registry = Registry(state_dir, registry_port, bind=host, public_host=public_host, tag_policy=moto_tag_immutable)
    # moto's ECR starts empty at every start, so does the registry: images kept from a previous
    # run would sit in repositories the account does not have, and their immutable tags would
    # refuse this run's images (a model re-registered in the fresh lake has a new model.json).
    shutil.rmtree(registry.root, ignore_errors=True)
    try:
        registry_url = registry.start()
    except RegistryUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    from devstack.aws.iam import role_credentials
    from devstack.containers import lambda_containers

    label = lambda_containers.label_for(state_dir)
    # A container gets its function's execution role's temporary credentials, as on Lambda
    # (AWS_ENDPOINT_URL follows once the server listens).
    environments = lambda_containers.Environments(
        label, credentials=lambda spec: role_credentials(spec.role, spec.function_name, spec.region)
    )
    try:
        enforce_iam(iam)
        from moto import settings
        from moto.server import ThreadedMotoServer

        from devstack.aws import awslambda, cloudwatch_alarms, emr, emr_executor, function_urls
        from devstack.aws import iam as devstack_iam

        lambda_containers.remove_leftovers(label)  # of a previous server of this state dir that was killed
        # Read at every request; set here too in case moto was imported before (an in-process test).
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if iam else float("inf")
        devstack_iam.install()
        admin = devstack_iam.create_admin()
        emr.install()
        awslambda.install(registry_url, environments)
        function_urls.install(host, public_host)
        cloudwatch_alarms.install()
        server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        server.start()
    except BaseException:
        registry.stop()
        raise
    port = server.get_host_and_port()[1]
    endpoint_url = f"http://127.0.0.1:{port}"
    awslambda.set_endpoint(endpoint_url)
    executor = emr_executor.Executor(endpoint_url, state_dir / "work", admin, node_root=node_root(state_dir))
    executor.start()
    write_state(
        state_dir,
        {
            "pid": os.getpid(),
            "endpoint_url": endpoint_url,
            "port": port,
            "registry_url": registry_url,
            "iam": iam,
            # devstack's admin user (Action "*"): for setting up what an account holds, never for the DAGs.
            "admin": {"access_key_id": admin[0], "secret_access_key": admin[1]},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "log": str(state_dir / "devstack.log"),
        },
    )
    logging.getLogger("devstack").info("serving on %s, registry %s (pid %d)", endpoint_url, registry_url, os.getpid())
    try:
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        logging.getLogger("devstack").info("stopping")
        executor.stop()
        server.stop()
        function_urls.close()
        environments.close()
        registry.stop()
        remove_state(state_dir, os.getpid())
    return 0
