"""Test infrastructure: a fake GitHub REST API server and webhook helpers.

Other test modules use these through the fixtures in :mod:`tests.support.fixtures`.
"""
