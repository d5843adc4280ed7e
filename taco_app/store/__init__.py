"""Persistence. All file and database access of sessions lives in this package."""
