"""Pure decisions over the answers of outside services: no calls, no clock, unit-tested alone.

An operator asks its hook, hands the answers to a plan function, and carries out what it
decides (bank_pipeline.utils.rollout is the model for the Kubernetes rollout).
"""
