"""Hooks: each outside service is called from one module here, in the Amazon provider's style.

Operators and the preflight reach a service only through its hook; the decisions made over
the hooks' answers are pure functions in bank_pipeline.plans.
"""
