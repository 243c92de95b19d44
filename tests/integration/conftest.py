"""The integration tests use the node tests' anvil fixtures, and the three users' setup of the
virtual-channel tests."""

from tests.integration.hub import hub_setup  # noqa: F401
from tests.node.conftest import anvil, anvil_setup, anvil_token_setup  # noqa: F401
