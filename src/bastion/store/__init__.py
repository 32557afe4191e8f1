"""The run store: every run's report, assets, check results and findings, in any SQL database.

SQLAlchemy 2 models and Alembic migrations (shipped in the package, run on open). SQLite at
``.bastion/bastion.db`` in the current folder by default (``BASTION_DB`` or ``--db`` override);
PostgreSQL via ``postgresql+psycopg://…`` (the ``sql`` extra). Importing this package imports
SQLAlchemy and Alembic; ``import bastion`` does not import it.

Example:
    >>> from bastion.store import Store, default_url
    >>> with Store.open(default_url()) as store:  # doctest: +SKIP
    ...     run_id = store.save_report(report)
    ...     again = store.get_report("latest")
"""

from bastion.store.errors import AmbiguousRun, RunNotFound, StoreError
from bastion.store.report_versions import migrate_report
from bastion.store.repository import (
    RunSummary,
    Store,
    alembic_config,
    default_url,
    head_revision,
    preflight,
    safe_url,
    upgrade,
)

__all__ = [
    "AmbiguousRun",
    "RunNotFound",
    "RunSummary",
    "Store",
    "StoreError",
    "alembic_config",
    "default_url",
    "head_revision",
    "migrate_report",
    "preflight",
    "safe_url",
    "upgrade",
]
