"""The model tests use the session-wide ``demo_store`` fixture of tests/conftest.py."""
