"""Peer connections: one authenticated connection per peer, dialled on demand, with reconnect,
backoff and request/response correlation."""
