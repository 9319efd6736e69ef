"""Placeholder: filled in by the elasticity work."""

__all__: list = []
