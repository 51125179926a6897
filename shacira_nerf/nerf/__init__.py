"""nerfstudio glue: nerfacto's fields and model built on SHACIRA grids, the scene file, the viewer panel.

Importing it (nerfstudio does, through our method entry points, in every ``ns-*`` command) also makes nerfstudio
1.1.5 work on a fresh torch install: its checkpoints reload under torch >= 2.6 (``checkpoints.py``), and
``ns-render``'s video writer finds an ffmpeg binary (the one the ``imageio-ffmpeg`` wheel ships) when none is on
the PATH.
"""

import shutil

from shacira_nerf.checkpoints import allow_nerfstudio_checkpoints

allow_nerfstudio_checkpoints()


def _use_bundled_ffmpeg() -> None:
    if shutil.which("ffmpeg"):
        return
    try:
        import imageio_ffmpeg
        import mediapy
    except ImportError:
        return
    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())


_use_bundled_ffmpeg()
