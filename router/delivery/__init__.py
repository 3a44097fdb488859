"""Delivery: the workers that hand stored messages to their destinations,
oldest first per key, and the one decision of when to retry."""
