"""The committed kernels under kernels/ are exactly what `invoke kernels.build` generates now."""

from pathlib import Path

from iwc.host.bundle import check_fresh
from iwc.recipe import REFERENCE

KERNELS = Path(__file__).resolve().parent.parent / "kernels"


def test_committed_kernels_are_fresh():
    stale = check_fresh(KERNELS, REFERENCE)
    assert stale == [], f"stale kernels {stale}: run `invoke kernels.build` and commit kernels/"
