"""``python -m eoi_core``: the same as the ``eoi`` console script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
