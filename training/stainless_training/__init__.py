"""Training of the Stainless networks (Ray Train jobs, losses, schedules, evaluation)."""
