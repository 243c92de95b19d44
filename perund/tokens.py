"""What an API token looks like, for the node (its token file) and the CLI (before it sends one).

Tokens the node makes are URL-safe base64 (`secrets.token_urlsafe`); an operator's own may be
base64 or hex too. Anything else is refused, so that a file given by mistake (a keystore's
password file, a keystore) never becomes a credential or travels in an `Authorization` header.
"""

from __future__ import annotations

import re
from typing import Final

TOKEN_FORM: Final = re.compile(r"[A-Za-z0-9_\-.~+/=]{16,512}")
TOKEN_FORM_TEXT: Final = ("one line of 16 to 512 letters, digits and - _ . ~ + / = "
                          "(a keystore's password or a JSON file is not a token)")


def is_token(text: str) -> bool:
    """Whether `text` (surrounding whitespace dropped) has the form of an API token."""
    return TOKEN_FORM.fullmatch(text.strip()) is not None
