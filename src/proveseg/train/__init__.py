"""Training: the iteration-based loop, losses, schedules, resumable state."""
