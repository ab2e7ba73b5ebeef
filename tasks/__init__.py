"""Plain functions that do ragtune's work, and the Prefect tasks that wrap them."""
