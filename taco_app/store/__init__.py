"""Persistence. All file and database access of sessions lives in this package."""


class StoreError(RuntimeError):
    """The database or the data folder failed (locked, full, gone, unreachable).

    The message is for people: what happened and what to do, never SQL. The cause is chained
    (``raise … from``) for the server log.
    """
