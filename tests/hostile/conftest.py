"""Fixtures of the hostile-input suite (defined in helpers.py, shared by its modules)."""

from tests.hostile.helpers import built_bundle, mini  # noqa: F401
