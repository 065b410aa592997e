"""Interactive Brokers data (``pip install 'factor-engine[ib]'``): a contract panel from IB Gateway or TWS through
ib_async, with daily adjusted bars, sectors from contract details and market caps from the fundamental ratios
tick, paced by IB's limits and resumable (:mod:`.ingest`; the command is ``factor-engine ingest-ib``).

Importing this package does not import ib_async; :class:`~.gateway.Gateway` does, when a download starts.
"""

from factor_engine.integrations.ib.gateway import GatewayConnectionError, GatewaySettings, SymbolProblem
from factor_engine.integrations.ib.ingest import (
    IBIngestResult,
    IngestEvent,
    SymbolSpec,
    assemble_panel,
    download,
    ingest_ib,
    read_symbols,
    remove_work_dir,
)
from factor_engine.integrations.ib.pacing import Pacer, PacingLimits, RequestKey
from factor_engine.integrations.ib.sectors import DEFAULT_SECTOR_MAP, SectorMap, load_sector_map

__all__ = [
    "DEFAULT_SECTOR_MAP",
    "GatewayConnectionError",
    "GatewaySettings",
    "IBIngestResult",
    "IngestEvent",
    "Pacer",
    "PacingLimits",
    "RequestKey",
    "SectorMap",
    "SymbolProblem",
    "SymbolSpec",
    "assemble_panel",
    "download",
    "ingest_ib",
    "load_sector_map",
    "read_symbols",
    "remove_work_dir",
]
