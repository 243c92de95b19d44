"""The user API: JSON-RPC 2.0 over HTTP (`/rpc`) and WebSocket (`/ws`), with pushes.

The layer translates between JSON and Python calls on one `NodeFacade` and decides nothing
about channels: `schema` validates params against the OpenRPC document it also publishes,
`amounts` converts decimal strings to wei, `dispatcher` is the JSON-RPC 2.0 engine, `methods`
the method table, `hub` caches and routes notifications, `http`/`ws`/`site` put it on the wire.
See docs/api.md.
"""
