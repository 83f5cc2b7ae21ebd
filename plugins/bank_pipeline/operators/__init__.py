"""Operators for what the Amazon and cncf-kubernetes providers lack: image push, Lambda image release, Kubernetes rollout."""
