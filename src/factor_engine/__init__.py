"""Factor Engine: a characteristic factor equity risk model (style scores, factor returns, risk).

Quick use::

    from factor_engine import styles, estimate_factor_returns
    mom = styles.momentum(panel)
    result = estimate_factor_returns(returns_df, mkt_cap_df, sector_df, style_df)
    factor_returns, residuals = result
"""

from factor_engine import styles, xsection
from factor_engine.panel import PanelError, load_panel, validate_panel
from factor_engine.regression import FactorReturns, estimate_factor_returns

__version__ = "0.1.0"

__all__ = [
    "FactorReturns",
    "PanelError",
    "__version__",
    "estimate_factor_returns",
    "load_panel",
    "styles",
    "validate_panel",
    "xsection",
]
