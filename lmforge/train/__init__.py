"""Training: the one loop, optimizers, schedules, checkpoints, distributed set-up."""
