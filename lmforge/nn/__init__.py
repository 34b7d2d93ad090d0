"""Reusable blocks with plain-argument constructors (no configs inside)."""
