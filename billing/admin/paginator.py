"""A changelist paginator whose count stays cheap on tables of millions of rows.

Django's admin counts the filtered rows of every list it shows (`SELECT COUNT(*)` with the
list's filters), and on PostgreSQL a count reads every matching row: on a ledger of ten million
entries, the "spend" filter alone took over a second. On PostgreSQL, for a table the statistics
say is large, this paginator asks the planner first: when it expects many rows, the list says
"about N" from the planner's estimate; when it expects few, cheaply found (an email search, by
index), it counts them; when it expects few but only a long scan finds them (a rare value no
index covers, or a filter that matches nothing: proving it means reading every row), it counts
under a short statement timeout and falls back to the estimate if the count runs past it. Small
tables, tables never analysed, and other databases get Django's exact count.
"""

from __future__ import annotations

import json

from django.core.paginator import Paginator
from django.db import DatabaseError, connections, transaction
from django.utils.formats import number_format
from django.utils.functional import cached_property
from django.utils.translation import gettext

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by its timeout


class EstimatedCount(int):
    """A row count the planner estimated: an int for the admin's arithmetic (pages, "show all"),
    shown as "about N" wherever the changelist prints it."""

    def __str__(self) -> str:
        # Two significant figures: the planner's estimate is not exact, so it does not look it.
        shown = round(int(self), 2 - len(str(int(self)))) if int(self) >= 100 else int(self)
        return gettext("about %(count)s") % {"count": number_format(shown, force_grouping=True)}


class LargeTablePaginator(Paginator):
    # Below this many rows (by the table's statistics) a count is cheap: always exact.
    large_table_rows = 100_000
    # When the planner expects at least this many rows, its estimate is shown without counting.
    estimate_above = 10_000
    # Below this planner cost (PostgreSQL's units: about one per page read) counting the rows is
    # cheap, e.g. through an index, and is done plainly; above it, under the timeout below.
    cheap_count_cost = 10_000
    # An exact count that takes longer than this gives way to the estimate.
    count_timeout_ms = 150

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        alias = getattr(queryset, "db", None)
        if alias is None or connections[alias].vendor != "postgresql":
            return super().count
        if self._table_rows(alias, queryset.model._meta.db_table) < self.large_table_rows:
            return super().count
        estimate, cost = self._plan(alias, queryset)
        if estimate >= self.estimate_above:
            return EstimatedCount(estimate)
        if cost < self.cheap_count_cost:
            return super().count
        exact = self._count_within_timeout(alias, queryset)
        return exact if exact is not None else EstimatedCount(estimate)

    @staticmethod
    def _table_rows(alias: str, table: str) -> float:
        """The table's row count as of its last ANALYZE (or VACUUM); -1 if never analysed."""
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", [table])
            row = cursor.fetchone()
        return row[0] if row and row[0] is not None else -1

    @staticmethod
    def _plan(alias: str, queryset) -> tuple[int, float]:
        """The planner's estimate of the rows the list matches, and of the cost of reading them."""
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
        with connections[alias].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"]), float(plan[0]["Plan"]["Total Cost"])

    def _count_within_timeout(self, alias: str, queryset) -> int | None:
        connection = connections[alias]
        try:
            # The savepoint (or transaction) scopes the timeout: set_config(..., true) lasts to
            # its end, and a cancelled count rolls back to it, timeout included.
            with transaction.atomic(using=alias):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT current_setting('statement_timeout')")
                    previous = cursor.fetchone()[0]
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{self.count_timeout_ms}ms"])
                    count = queryset.count()
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
                return count
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != QUERY_CANCELED:
                raise
            return None
