"""The peer wire format: message types, the versioned binary codec, framing and the handshake.

Nothing here decides anything about channels: this package turns bytes into authenticated,
attributed messages and back.
"""
