"""The chain boundary: the Adjudicator's artifact, the embedded dev chain, and `ChainBackend`
(JSON-RPC calls on a dedicated thread pool, with a Deferred API for the reactor side).

See docs/chain.md for the threading model and the errors.
"""
