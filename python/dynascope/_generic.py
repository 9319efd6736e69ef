"""Placeholder: filled in by the generic work."""

__all__: list = []
