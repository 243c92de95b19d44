"""What an API token looks like, for the node (its token file) and the CLI (before it sends one).

Tokens the node makes are URL-safe base64 (`secrets.token_urlsafe(32)`: 43 characters); an
operator's own may be base64 or hex too, of at least 32 characters (128 bits as hex). Anything
else is refused, so that a file given by mistake (a keystore's password file, a keystore) never
becomes a credential or travels in an `Authorization` header. The length matters for that too:
`perund generate`'s password files (19 letters and dashes) had a token's form, and the CLI sent
one to whatever `--node` named (an audit).
"""

from __future__ import annotations

import re
from typing import Final

TOKEN_FORM: Final = re.compile(r"[A-Za-z0-9_\-.~+/=]{32,512}")
TOKEN_FORM_TEXT: Final = ("one line of 32 to 512 letters, digits and - _ . ~ + / = "
                          "(a keystore's password or a JSON file is not a token)")


def is_token(text: str) -> bool:
    """Whether `text` (surrounding whitespace dropped) has the form of an API token."""
    return TOKEN_FORM.fullmatch(text.strip()) is not None
