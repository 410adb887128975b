"""Studies: experiment matrices, executors, leaderboards and reports."""
