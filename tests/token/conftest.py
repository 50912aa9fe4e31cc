"""Token tests reuse the per-sample references of the classification losses (tests/losses/_loss_refs.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
