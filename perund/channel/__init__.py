"""The pure channel core: params, states, encoding and hashing, validation and transitions.

Nothing in this package does I/O, reads a clock or imports Twisted.
"""
