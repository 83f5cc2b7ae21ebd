"""A read-only web page per Deployment of the local control plane: where the Airflow UI's
"Kubernetes Deployment" link leads under ``make up`` (there is no dashboard here, and the
API server itself wants a client certificate and shows a browser a certificate warning).

    python -m devstack.kube.view --state-dir build/stack/kube --server https://127.0.0.1:PORT --port 0

- ``GET /``: the Deployments of every namespace, with their images and ready replicas;
- ``GET /deployments/<namespace>/<name>``: one Deployment: image, replicas, conditions, the
  HorizontalPodAutoscaler that scales it (replicas current and desired, CPU against its target,
  its conditions), its ReplicaSets (revision, image), its pods (phase, readiness, what a container
  waits for, CPU and memory from the metrics API when metrics-server runs) and the namespace's
  latest events; ``?format=json`` gives the Deployment as the API returns it.

Only GET requests reach the API (as the cluster's admin, with the state directory's PKI);
every other method is answered 405 here. Listens on 127.0.0.1 only. ``devstack.kube``
starts it as one of the cluster's processes (``KubeCluster(view=True)``) and stops it with them.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import signal
import ssl
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123: namespaces and Deployment names
STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "code{font-size:.9em}.bad{color:#b00}.ok{color:#070}"
)


class ApiReader:
    """GET requests to the API server as the cluster's admin."""

    def __init__(self, server: str, pki: Path) -> None:
        self.server = server.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def get(self, path: str) -> dict[str, Any] | None:
        """The JSON at ``path``, or None if it does not exist."""
        request = urllib.request.Request(self.server + path, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


def _status(condition: dict[str, Any]) -> str:
    """A condition's status, green when True."""
    status = condition.get("status")
    return f"<span class='{'ok' if status == 'True' else 'bad'}'>{_e(status)}</span>"


def _optional(api: ApiReader, path: str) -> dict[str, Any]:
    """An aggregated API's answer, or {} while it cannot answer (no metrics-server: 404 or 503)."""
    try:
        return api.get(path) or {}
    except urllib.error.HTTPError:
        return {}


def _autoscaling(api: ApiReader, namespace: str, name: str) -> str:
    """The HorizontalPodAutoscalers of the namespace that scale Deployment ``name``."""
    hpas = (api.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers") or {}).get("items") or []
    rows, conditions = [], []
    for hpa in hpas:
        spec, status = hpa["spec"], hpa.get("status") or {}
        if spec["scaleTargetRef"].get("kind") != "Deployment" or spec["scaleTargetRef"].get("name") != name:
            continue
        targets = [
            f"{_e(m['resource']['name'])} {_e(m['resource']['target'].get('averageUtilization'))} %"
            for m in spec.get("metrics") or [] if m.get("type") == "Resource"
        ]  # fmt: skip
        current = [
            f"{_e(m['resource']['name'])} {_e(m['resource']['current'].get('averageUtilization'))} %"
            f" ({_e(m['resource']['current'].get('averageValue'))})"
            for m in status.get("currentMetrics") or [] if m.get("type") == "Resource"
        ]  # fmt: skip
        rows.append([_e(hpa["metadata"]["name"]), f"{_e(spec.get('minReplicas'))}-{_e(spec.get('maxReplicas'))}",
                     _e(status.get("currentReplicas")), _e(status.get("desiredReplicas")), "<br>".join(targets),
                     "<br>".join(current) or "unknown", _e(status.get("lastScaleTime"))])  # fmt: skip
        conditions += [
            [_e(c.get("type")), _status(c),
             _e(c.get("reason")), _e(c.get("message"))]
            for c in status.get("conditions") or []
        ]  # fmt: skip
    if not rows:
        return "<h2>Autoscaling</h2><p>no HorizontalPodAutoscaler scales this Deployment</p>"
    return (
        "<h2>Autoscaling</h2>"
        + _table(["HPA", "replicas allowed", "current", "desired", "target", "now", "last scaled"], rows)
        + _table(["condition", "status", "reason", "message"], conditions)
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>none</p>"


def _e(value: Any) -> str:
    return html.escape(str(value if value is not None else ""))


def _images(obj: dict[str, Any]) -> str:
    containers = obj["spec"]["template"]["spec"]["containers"]
    return "<br>".join(f"{_e(c['name'])}: <code>{_e(c['image'])}</code>" for c in containers)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body><p><a href='/'>all Deployments</a></p><h1>{_e(title)}</h1>{body}</body></html>"
    )


def index_page(api: ApiReader) -> str:
    """Every Deployment of the cluster."""
    items = (api.get("/apis/apps/v1/deployments") or {}).get("items") or []
    rows = []
    for dep in sorted(items, key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"])):
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        status = dep.get("status") or {}
        link = f"<a href='/deployments/{_e(ns)}/{_e(name)}'>{_e(ns)}/{_e(name)}</a>"
        rows.append([link, _images(dep), f"{status.get('readyReplicas') or 0}/{dep['spec'].get('replicas')}"])
    return _page("Deployments", _table(["Deployment", "image", "ready"], rows))


def deployment_page(api: ApiReader, namespace: str, name: str) -> str | None:
    """One Deployment and what it is made of; None if it does not exist."""
    dep = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    if dep is None:
        return None
    status = dep.get("status") or {}
    spec = dep["spec"]
    counts = [
        [_e(spec.get("replicas")), _e(status.get("updatedReplicas") or 0), _e(status.get("readyReplicas") or 0),
         _e(status.get("availableReplicas") or 0), _e(dep["metadata"].get("generation")), _e(status.get("observedGeneration"))]
    ]  # fmt: skip
    conditions = [
        [_e(c.get("type")), _status(c),
         _e(c.get("reason")), _e(c.get("message")), _e(c.get("lastUpdateTime"))]
        for c in status.get("conditions") or []
    ]  # fmt: skip
    selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector", {}).get("matchLabels") or {}).items())
    query = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
    replicasets = (api.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets{query}") or {}).get("items") or []
    rs_rows = [
        [_e(rs["metadata"]["name"]), _e((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")),
         _images(rs), f"{(rs.get('status') or {}).get('readyReplicas') or 0}/{rs['spec'].get('replicas')}"]
        for rs in sorted(replicasets, key=lambda r: r["metadata"].get("creationTimestamp") or "", reverse=True)
    ]  # fmt: skip
    pods = (api.get(f"/api/v1/namespaces/{namespace}/pods{query}") or {}).get("items") or []
    usage = {
        m["metadata"]["name"]: m["containers"]
        for m in _optional(api, f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods{query}").get("items") or []
    }
    pod_rows = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        pstatus = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in pstatus.get("conditions") or [])
        waiting = "; ".join(
            f"{_e(s['name'])}: {_e(s['state']['waiting'].get('reason'))}"
            for s in pstatus.get("containerStatuses") or []
            if (s.get("state") or {}).get("waiting")
        )
        containers = usage.get(pod["metadata"]["name"]) or []
        cpu = ", ".join(_e(c["usage"].get("cpu")) for c in containers)
        memory = ", ".join(_e(c["usage"].get("memory")) for c in containers)
        pod_rows.append([_e(pod["metadata"]["name"]), _e(pstatus.get("phase")),
                         f"<span class='{'ok' if ready else 'bad'}'>{'yes' if ready else 'no'}</span>",
                         _e(pod["spec"].get("nodeName")), cpu, memory, waiting])  # fmt: skip
    events = (api.get(f"/api/v1/namespaces/{namespace}/events") or {}).get("items") or []
    events = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")[-15:]
    event_rows = [
        [_e(e.get("lastTimestamp") or e.get("eventTime")), _e(e.get("type")), _e(e.get("reason")),
         _e(f"{e['involvedObject'].get('kind')}/{e['involvedObject'].get('name')}"), _e(e.get("message"))]
        for e in events
    ]  # fmt: skip
    body = (
        f"<p>{_images(dep)}</p>"
        + _table(["desired", "updated", "ready", "available", "generation", "observed"], counts)
        + "<h2>Conditions</h2>"
        + _table(["type", "status", "reason", "message", "updated"], conditions)
        + _autoscaling(api, namespace, name)
        + "<h2>ReplicaSets</h2>"
        + _table(["name", "revision", "image", "ready"], rs_rows)
        + "<h2>Pods</h2>"
        + _table(["name", "phase", "ready", "node", "CPU", "memory", "waiting"], pod_rows)
        + "<h2>Latest events in the namespace</h2>"
        + _table(["time", "type", "reason", "object", "message"], event_rows)
        + "<p><a href='?format=json'>the Deployment as JSON</a></p>"
    )
    return _page(f"Deployment {namespace}/{name}", body)


class Handler(BaseHTTPRequestHandler):
    api: ApiReader  # set on the class by serve()

    def _send(self, code: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        try:
            if not parts:
                self._send(200, index_page(self.api))
            elif len(parts) == 3 and parts[0] == "deployments" and all(NAME.match(p) for p in parts[1:]):
                namespace, name = parts[1], parts[2]
                if urllib.parse.parse_qs(url.query).get("format") == ["json"]:
                    dep = self.api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
                    if dep is None:
                        self._send(404, json.dumps({"error": f"no Deployment {namespace}/{name}"}), "application/json")
                    else:
                        self._send(200, json.dumps(dep, indent=2), "application/json")
                    return
                page = deployment_page(self.api, namespace, name)
                if page is None:
                    self._send(
                        404, _page("Not found", f"<p>There is no Deployment {_e(namespace)}/{_e(name)} (yet).</p>")
                    )
                else:
                    self._send(200, page)
            else:
                self._send(
                    404, _page("Not found", f"<p>Nothing at {_e(url.path)}: try / or /deployments/NAMESPACE/NAME.</p>")
                )
        except (urllib.error.URLError, OSError, ValueError) as err:
            self._send(502, _page("The API server did not answer", f"<p>{_e(err)}</p>"))

    def _read_only(self) -> None:
        self._send(405, _page("Read-only", "<p>This view only reads.</p>"))

    do_POST = do_PUT = do_PATCH = do_DELETE = _read_only


def serve(server: str, state_dir: Path, port: int) -> int:
    """Serve until SIGTERM or SIGINT."""
    Handler.api = ApiReader(server, state_dir / "pki")
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"kube view on http://127.0.0.1:{httpd.server_address[1]}/", flush=True)
    httpd.serve_forever()
    httpd.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.kube.view", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="the API server's URL")
    parser.add_argument("--state-dir", type=Path, required=True, help="the cluster's state directory (its pki/)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    return serve(args.server, args.state_dir, args.port)


if __name__ == "__main__":
    sys.exit(main())
