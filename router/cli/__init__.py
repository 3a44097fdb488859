"""The `router` command (main.py): every subcommand, its tables and lists."""
