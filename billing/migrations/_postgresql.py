"""For migrations that install PostgreSQL-only SQL (the append-only trigger, the ledger's spend
function); other databases skip them. Django's migration loader ignores modules starting with "_"."""


def run_on_postgresql(schema_editor, sql: str) -> None:
    # No parameters: a '%' in RAISE's format string must reach PostgreSQL as it is.
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)
