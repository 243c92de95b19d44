"""twistd plugin: `twistd -n perund --config FILE` (the work is done by `perund.tap`)."""

from twisted.application.service import ServiceMaker

perund = ServiceMaker(
    "perund",
    "perund.tap",
    "A state-channel node for Ethereum: payment channels, off-chain payments, settlement.",
    "perund",
)
