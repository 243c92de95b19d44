"""perund-cli: the command-line client of a perund node (JSON-RPC and WebSocket only).

`main.py` is the console script (one-shot commands, or the shell without one), `commands.py`
the commands both modes share, `shell.py` the interactive shell (its state in
`shell_state.py`, its WebSocket in `shell_pushes.py`, Tab completion in `completion.py`, the
prompt loop in `prompt.py`), `render.py` the text shown, `progress.py` long waits,
`settings.py` the node address, token and session, `errors.py` the exit codes and error lines.
"""
