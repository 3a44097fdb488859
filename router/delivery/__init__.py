"""Delivery: the workers that hand stored messages to their destinations,
oldest first per key (workers.py, worker.py, attempt.py), the one decision
of when to retry (retry.py), and how a destination's health is judged and
told (health.py)."""
