"""Placeholder: filled in by the llc work."""

__all__: list = []
