"""PostgreSQL backend whose new connections log in with the ``DATABASE_PASSWORD`` credential.

It is Django's own backend except for how a connection is opened: when the credential has a value,
the password comes from :mod:`core.secrets` (CURRENT, then NEXT when the server answers
"password authentication failed"; see :mod:`core.rotation`), so a rotation needs no restart.
When the credential has no value, the ``PASSWORD`` of the DATABASES entry (from ``DATABASE_URL``) is
used, as with Django's backend. Open connections are not affected by a password change on the server;
PostgreSQL checks a password only when a connection starts.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base

from core.rotation import connect_with_credential

CREDENTIAL = "DATABASE_PASSWORD"
# SQLSTATE invalid_password; psycopg2 does not attach it to connection errors, hence the message too
# (which assumes the server's lc_messages is English, as it is by default).
_AUTH_FAILED_SQLSTATE = "28P01"
_AUTH_FAILED_MESSAGE = "password authentication failed"


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if self.settings_dict["OPTIONS"].get("pool"):
            # A psycopg pool opens its connections itself, with the parameters it was created with.
            return super().get_new_connection(conn_params)
        open_connection = super().get_new_connection

        def attempt(password: str | None) -> Any:
            return open_connection(conn_params if password is None else {**conn_params, "password": password})

        return connect_with_credential(CREDENTIAL, attempt, is_rejection=self._is_password_rejection)

    def _is_password_rejection(self, error: BaseException) -> bool:
        if not isinstance(error, self.Database.OperationalError):
            return False
        code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
        return code == _AUTH_FAILED_SQLSTATE or _AUTH_FAILED_MESSAGE in str(error)
