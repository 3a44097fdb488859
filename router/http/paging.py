"""A page of a list asked for in a query (`start`, `count`): checked alike
on the admin API and the dashboard.

Redis takes list indexes as 64-bit numbers; past them (start + count) it
answers an error that is the caller's mistake, not a reason for a 503. So a
position or count outside what any list can hold is a 400 naming the
allowed range; a count above the page size is cut to it (documented).
"""

from __future__ import annotations

from router.http.errors import BadRequest

MAX_INDEX = 2**31 - 1  # largest position or count taken from a query
MAX_PAGE = 1000  # most items one answer lists


def start_of(start: int) -> int:
    """A page's first position (0 = oldest), or BadRequest."""
    if not 0 <= start <= MAX_INDEX:
        raise BadRequest(f"start must be from 0 to {MAX_INDEX}")
    return start


def count_of(count: int, page: int = MAX_PAGE) -> int:
    """How many to list: from 1 (else BadRequest), cut to `page`."""
    if not 1 <= count <= MAX_INDEX:
        raise BadRequest(f"count must be from 1 to {MAX_INDEX} (at most {page} are listed)")
    return min(count, page)


def batch_of(count: int | None) -> int | None:
    """How many an action (replay, purge) takes: None for all, else from 1
    to MAX_INDEX (else BadRequest)."""
    if count is not None and not 1 <= count <= MAX_INDEX:
        raise BadRequest(f"count must be from 1 to {MAX_INDEX} (leave it out for all)")
    return count


def limit_of(limit: int, most: int = MAX_PAGE) -> int:
    """How many a search lists (`limit`): from 1 to `most`, else BadRequest
    (not cut: a search costs what it reads)."""
    if not 1 <= limit <= most:
        raise BadRequest(f"limit must be from 1 to {most}")
    return limit
