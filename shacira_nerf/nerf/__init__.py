"""nerfstudio glue: nerfacto's fields and model built on SHACIRA grids, the scene file, the viewer panel."""
