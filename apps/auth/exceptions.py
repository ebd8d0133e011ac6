"""Why an operator, or the users file, was refused.

Every refusal is an :class:`AuthError`, so a command can turn any of them into exit
code 2 without matching on messages; the subclasses tell a caller which one it was.
"""

from __future__ import annotations


class AuthError(Exception):
    """An operator action was refused; nothing was recorded."""


class UsersFileError(AuthError, ValueError):
    """A name, password or role was not acceptable, or the users file is unreadable.

    Names the field and the value (never a password's value).
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}: {reason}" + ("" if value is None else f" (got {value!r})"))


class LoginRefused(AuthError):
    """Unknown user or wrong password. One message for both, so a caller cannot probe
    which names exist."""


class NotPermitted(AuthError):
    """The user is known and the password right, but the role does not allow the action."""
