"""One router process's running parts, wired in one place (wiring.py) for
every process kind, live routes.yaml (reload.py) and the start log."""
