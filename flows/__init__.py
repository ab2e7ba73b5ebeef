"""Prefect flows (one per stage) and the `ragtune` command line."""
