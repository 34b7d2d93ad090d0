"""Tasks: a model plus its batch format, loss and metrics. The trainer calls only these."""
