"""The integration tests use the node tests' anvil fixtures."""

from tests.node.conftest import anvil, anvil_setup, anvil_token_setup  # noqa: F401
