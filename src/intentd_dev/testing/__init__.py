"""Helpers behind the test tasks (not test code itself)."""
