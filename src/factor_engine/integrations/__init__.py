"""Connections to outside systems, one subpackage each, each behind its own optional extra
(``pip install 'factor-engine[ib]'`` for :mod:`factor_engine.integrations.ib`). ``import factor_engine`` imports
none of them."""
