"""nerfstudio glue: nerfacto's fields and model built on SHACIRA grids, the scene file, the viewer panel."""

from shacira_nerf.checkpoints import allow_nerfstudio_checkpoints

allow_nerfstudio_checkpoints()
