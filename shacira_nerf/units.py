"""Units shared by every size the package reports (no torch import: ``shacira info`` stays fast)."""

BYTES_PER_MB = 1_000_000
"""MB means 10^6 bytes everywhere: estimates, file sizes, the viewer and ns-eval."""
