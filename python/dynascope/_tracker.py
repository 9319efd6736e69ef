"""Placeholder: filled in by the tracker work."""

__all__: list = []
