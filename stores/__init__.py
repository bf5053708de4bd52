"""Tally's two stores and what they share; storage.py, the face, is the
only module outside this folder that imports any of it.

    values.py       the errors and values every store and caller reads
    writer.py       the group-commit writer each store composes
    traffic.py      GitHub's kept traffic, composed as store.github
    store.py        the interface both stores implement, its shared reads
                    and an import's steps
    sql.py          the statements both stores run, written once
    sqlite.py       the SQLite store (the default)
    sqlite_file.py  a SQLite file: sqlite3, connections, schema, lock, copies
    postgres.py     the PostgreSQL store (psycopg)
"""
