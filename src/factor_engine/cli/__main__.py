"""``python -m factor_engine.cli``."""

from factor_engine.cli import main

main()
