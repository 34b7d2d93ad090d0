"""Serve a run over HTTP: OpenAI-style completions, classification, and a web playground."""
