"""Parity with toraniko 1.1.1 through the golden files in ``tests/results`` (produced by bench/make_golden.py).

toraniko itself is never imported: its outputs were computed once in its own venv. Every comparison joins
on (date, symbol) or date, treats NaN and null as the same "missing", requires the sets of non-missing rows
to be equal and the values to agree within 1e-9.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from factor_engine import estimate_factor_returns, styles
from factor_engine.regression import MARKET
from tests_support_marker import GOLDEN_ATOL  # noqa: F401  (placeholder, replaced below)
