"""perund: a state-channel node for Ethereum."""

__version__ = "0.1.0"
