"""Image mode: SHACIRA on a 2D grid (compress, decompress, grid visualisation)."""
