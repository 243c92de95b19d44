"""Contacts: a session's peers from its contacts YAML plus those added at run time (see `book`)."""

from __future__ import annotations

from perund.contacts.book import (
    COMM_TYPES,
    RESERVED_ALIAS,
    Contact,
    ContactBook,
    ContactStore,
    DictContactStore,
    check_alias,
    load_contacts_file,
    parse_account_address,
    parse_comm_address,
    parse_contacts,
)

__all__ = [
    "COMM_TYPES",
    "RESERVED_ALIAS",
    "Contact",
    "ContactBook",
    "ContactStore",
    "DictContactStore",
    "check_alias",
    "load_contacts_file",
    "parse_account_address",
    "parse_comm_address",
    "parse_contacts",
]
