"""The database tables of the store (SQLAlchemy Core), created and changed only by the Alembic migrations.

Every table lives in the connection's schema (PostgreSQL ``search_path``; SQLite has one schema). Model tables
reference ``model_runs.id`` with ``ON DELETE CASCADE``: deleting a run deletes every row of its model.

``panel``
    The long daily panel (the data contract of :mod:`factor_engine.panel`): primary key ``(date, symbol)``;
    ``sector`` (text, nullable) and every other column of the contract as float64 (nullable):
    ``asset_returns``, ``market_cap``, the value features ``book_price``, ``sales_price``, ``cf_price``, the
    trading columns ``volume``, ``shares_outstanding``, ``turnover`` and the USE4 fundamentals
    ``earnings_price``, ``forecast_earnings_price``, ``dividend_yield``, ``earnings_growth``, ``sales_growth``,
    ``forecast_growth``, ``market_leverage``, ``book_leverage``, ``debt_to_assets`` (migration 0003).
``model_runs``
    One model build ("job"); its ``id`` (uuid4 hex) is also the model id. ``status`` is ``queued``,
    ``running``, ``succeeded`` or ``failed``; ``request`` (JSON) is the create request; ``stage``, ``progress``
    (0..1), ``error``, ``timings`` (JSON, seconds per stage); ``created_at``/``started_at``/``finished_at``
    (UTC). Filled on success: ``model_meta`` (JSON: factors, sectors, styles, horizon, config, engine_version,
    first_date, last_date, n_dates, n_assets, covariance_dates; ``updated_at`` once dates were appended) and
    ``forecast_dates`` (blob, the dates :func:`factor_engine.portfolio.snapshot.forecast_dates` returns, as
    little-endian int32 days since 1970-01-01). While queued or running: ``worker`` (the id of the service
    process that holds the build) and ``lease_expires_at`` (UTC; the worker renews it; once past, any worker
    fails the run). ``kind`` is ``build`` (the run makes the model of its id) or ``update`` (the run appends
    dates to the model ``model_id``; its request is the update request; it never holds a model itself);
    ``updated_at`` (UTC) is when dates were last appended to a build's model (null until then) (migration 0004).
``model_symbols``
    Per-model symbol dictionary: ``(model_id, position)`` → ``symbol``; positions are 0..N-1 over the sorted
    distinct symbols of the model's exposures, specific risk and residuals; symbols first seen in dates
    appended later take the next positions (sorted among themselves).
``model_factor_returns``
    Long rows ``(model_id, date, factor, value)``: one per date and factor of ``RiskModel.factor_returns``
    (``value`` null where the frame has null).
``model_covariances``
    ``(model_id, date, data)``: the forecast made at that close, a K×K little-endian float64 blob, row-major,
    rows and columns in the model's factor order (NaN where undefined), in the model's horizon units.
``model_exposures``, ``model_specific_risk``, ``model_residuals``
    ``(model_id, date, positions, data)``: the rows of one date, in frame order. ``positions`` is a
    little-endian int32 blob of N symbol positions (see ``model_symbols``); ``data`` a little-endian float64
    blob of N×K values, row-major, with K = the model's factors for exposures (their columns in factor order;
    the style scores are the style columns) and K = 1 for ``specific_vol`` and ``residual``. A null value is
    stored as NaN and read back as null. On PostgreSQL ``data`` is TOAST-compressed with lz4.
``model_state``
    ``(model_id, component, data)``: the update state of the model (:attr:`factor_engine.model.RiskModel.state`:
    ``factor_covariance``, ``specific_risk``), one uncompressed ``.npz`` file per component (``numpy.savez``; read
    without pickle), written with the model and replaced by each append (migration 0004; lz4 on PostgreSQL).
``model_diagnostics``
    ``(model_id, data)``: ``RiskModel.diagnostics`` as one uncompressed Arrow IPC file (``polars.write_ipc``),
    which keeps its dtypes (list columns included) exactly.
"""

from __future__ import annotations

import sqlalchemy as sa

from factor_engine.panel import FUNDAMENTAL_COLUMNS, TRADING_COLUMNS

__all__ = [
    "BLOB_TABLES",
    "metadata",
    "model_covariances",
    "model_diagnostics",
    "model_exposures",
    "model_factor_returns",
    "model_residuals",
    "model_runs",
    "model_specific_risk",
    "model_state",
    "model_symbols",
    "panel",
]

metadata = sa.MetaData()

panel = sa.Table(
    "panel",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("symbol", sa.String, primary_key=True),
    sa.Column("asset_returns", sa.Float(53)),
    sa.Column("market_cap", sa.Float(53)),
    sa.Column("sector", sa.String),
    sa.Column("book_price", sa.Float(53)),
    sa.Column("sales_price", sa.Float(53)),
    sa.Column("cf_price", sa.Float(53)),
    *(sa.Column(name, sa.Float(53)) for name in (*TRADING_COLUMNS, *FUNDAMENTAL_COLUMNS)),
)

model_runs = sa.Table(
    "model_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("stage", sa.String),
    sa.Column("progress", sa.Float(53), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("timings", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("model_meta", sa.JSON),
    sa.Column("forecast_dates", sa.LargeBinary),
    sa.Column("worker", sa.String(128)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("kind", sa.String(16), nullable=False, server_default="build"),
    sa.Column("model_id", sa.String(32), index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)


def _model_id() -> sa.Column[str]:
    return sa.Column("model_id", sa.String(32), sa.ForeignKey("model_runs.id", ondelete="CASCADE"), primary_key=True)


model_symbols = sa.Table(
    "model_symbols",
    metadata,
    _model_id(),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("symbol", sa.String, nullable=False),
)

model_factor_returns = sa.Table(
    "model_factor_returns",
    metadata,
    _model_id(),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("factor", sa.String, primary_key=True),
    sa.Column("value", sa.Float(53)),
)

model_covariances = sa.Table(
    "model_covariances",
    metadata,
    _model_id(),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def _blob_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        _model_id(),
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("positions", sa.LargeBinary, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


model_exposures = _blob_table("model_exposures")
model_specific_risk = _blob_table("model_specific_risk")
model_residuals = _blob_table("model_residuals")

model_state = sa.Table(
    "model_state",
    metadata,
    _model_id(),
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

model_diagnostics = sa.Table(
    "model_diagnostics",
    metadata,
    _model_id(),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# The per-date (positions, data) tables.
BLOB_TABLES: tuple[sa.Table, ...] = (model_exposures, model_specific_risk, model_residuals)
