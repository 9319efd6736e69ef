"""Placeholder: filled in by the regions work."""

__all__: list = []
