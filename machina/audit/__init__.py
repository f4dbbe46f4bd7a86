"""Hash-chained run logs: writing them, verifying them, and replaying a run strictly from one."""
