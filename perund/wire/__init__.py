"""The peer wire format: message types, the versioned binary codec, framing and the handshake.

Nothing here decides anything about channels: this package turns bytes into authenticated,
attributed messages and back.
"""

# The virtual-channel messages (perund/wire/virtual_codec.py) add themselves to the codec's
# tables; importing the package (which importing any of its modules does first) installs them.
import perund.wire.virtual_codec  # noqa: F401
