"""One user's shell around the channel core: the channel client and its on-chain settlement."""
