"""Memory: predict what a training run needs before it starts (`lmforge estimate-memory`)."""
