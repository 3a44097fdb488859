"""The `router` command: its parser and dispatch (main.py), each subcommand
in its own module (serving, check, queues, dead, orphans, unroutable), what
they share (config_load: routes.yaml; on_redis: the router's Redis), and
their tables and lists (status_table, list_tables)."""
