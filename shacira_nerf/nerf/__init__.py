"""nerfstudio glue: nerfacto's fields and model built on SHACIRA grids, the scene file, the viewer panel.

Importing it (nerfstudio does, through our method entry points, in every ``ns-*`` command) also makes nerfstudio
1.1.5 work on a fresh torch install: its checkpoints reload under torch >= 2.6 (``checkpoints.py``), and
``ns-render``'s video writer finds an ffmpeg binary (the one the ``imageio-ffmpeg`` wheel ships) when none is on
the PATH.
"""

import os
import shutil
import tempfile

from shacira_nerf.checkpoints import allow_nerfstudio_checkpoints

allow_nerfstudio_checkpoints()


def _use_bundled_ffmpeg() -> None:
    """Put imageio-ffmpeg's binary on the PATH as ``ffmpeg`` (nerfstudio checks ``shutil.which("ffmpeg")``)."""
    if shutil.which("ffmpeg"):
        return
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return
    folder = os.path.join(tempfile.gettempdir(), f"shacira-nerf-ffmpeg-{os.getuid()}")
    link = os.path.join(folder, "ffmpeg")
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.realpath(link) != os.path.realpath(exe):
            tmp = f"{link}.{os.getpid()}"
            os.symlink(exe, tmp)
            os.replace(tmp, link)
    except OSError:
        return
    os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


_use_bundled_ffmpeg()
