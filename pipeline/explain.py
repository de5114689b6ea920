"""Deprecated name of :mod:`pipeline.saliency` (SRNet saliency maps), kept for one release.

    python -m pipeline.explain ...   is   python -m pipeline.saliency ...

It warns (a :class:`DeprecationWarning` and one line on standard error) and runs
:func:`pipeline.saliency.main`. The defect evidence of one image is ``python -m pipeline.ml_age
explain``, unrelated to this module.
"""

from __future__ import annotations

import sys
import warnings

from pipeline import saliency

NOTE = "pipeline.explain is now pipeline.saliency; the old name will be removed in the next release"


def main(argv: list[str] | None = None) -> int:
    """Warn about the old name, then run ``python -m pipeline.saliency`` with ``argv``."""
    warnings.warn(NOTE, DeprecationWarning, stacklevel=2)
    print(NOTE, file=sys.stderr)
    return saliency.main(argv)


if __name__ == "__main__":
    sys.exit(main())
