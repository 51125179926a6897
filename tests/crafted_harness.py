"""Run ``shacira`` commands, each in its own forked process under a memory limit and a timeout; report JSON.

Usage: ``python tests/crafted_harness.py cases.json results.json``. ``cases.json`` is a list of
``{"name": ..., "argv": [...]}`` (optionally ``"uid"``: run as that user): each ``argv`` goes to ``shacira_nerf.cli.main`` exactly as the console script
passes its arguments. The parent imports the heavy modules once, then forks one child per case (so each case costs
milliseconds instead of a torch import); the child sets ``RLIMIT_AS`` and an alarm, runs the command with its
stdout and stderr captured in files, prints any escaping exception's traceback like Python does, and exits with the
command's status. The parent collects each child's exit status and peak resident memory (``wait4``'s
``ru_maxrss``, which starts at the parent's resident size at the fork, reported as ``parent_rss_kb``).

Environment: ``CRAFTED_MEMORY_MARGIN_MB`` (address space a child may add to the parent's, default 2048) and
``CRAFTED_TIMEOUT_S`` (default 120).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings


def _status_kb(field: str) -> int:
    """A size from /proc/self/status (VmSize: address space, VmRSS: resident now), in kB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(argv: list, out_path: str, err_path: str, limit: int, timeout: int, uid: int | None) -> None:
    from shacira_nerf.cli import main

    rc = 1
    try:
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = os.fdopen(1, "w", closefd=False)
        sys.stderr = os.fdopen(2, "w", closefd=False)
        if uid is not None:  # e.g. nobody, so that folder permissions apply even when the suite runs as root
            os.setgid(uid)
            os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.alarm(timeout)
        rc = main(list(argv))
    except SystemExit as exc:  # tyro's usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what the console script would print: a traceback (the tests look for it)
        traceback.print_exc()
        rc = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - nothing left to report to
                pass
        os._exit(rc)


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    import nerfstudio.viewer.viewer  # noqa: F401 - everything a case needs, imported once before the forks
    import tyro
    from nerfstudio.data.scene_box import SceneBox

    import shacira_nerf.cli  # noqa: F401
    import shacira_nerf.image.cli  # noqa: F401
    import shacira_nerf.nerf.commands  # noqa: F401
    import shacira_nerf.nerf.scene_file

    # Modules imported on first use, imported here once (also so that a child that drops to nobody can run):
    # tyro's parser internals, and nerfstudio's model modules.
    tyro.cli(shacira_nerf.cli._commands(), args=["render", "x.shac"])
    with torch.device("meta"):
        config = shacira_nerf.nerf.scene_file.ShaciraModelConfig()
        config.setup(scene_box=SceneBox(aabb=torch.zeros(2, 3)), num_train_data=1, metadata={})

    margin = int(os.environ.get("CRAFTED_MEMORY_MARGIN_MB", "2048")) * 2**20
    timeout = int(os.environ.get("CRAFTED_TIMEOUT_S", "120"))
    limit = _status_kb("VmSize") * 1024 + margin
    base_rss_kb = _status_kb("VmRSS")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, case in enumerate(json.load(open(cases_path))):
            out_path, err_path = os.path.join(tmp, f"{index}.out"), os.path.join(tmp, f"{index}.err")
            start = time.time()
            pid = os.fork()
            if pid == 0:
                _child(case["argv"], out_path, err_path, limit, timeout, case.get("uid"))
            _, status, usage = os.wait4(pid, 0)
            results.append({
                "name": case["name"],
                "argv": case["argv"],
                "rc": os.waitstatus_to_exitcode(status),
                "stdout": open(out_path, errors="replace").read(),
                "stderr": open(err_path, errors="replace").read(),
                "peak_rss_kb": usage.ru_maxrss,
                "seconds": time.time() - start,
            })  # fmt: skip
    json.dump({"parent_rss_kb": base_rss_kb, "limit_bytes": limit, "results": results}, open(results_path, "w"))


if __name__ == "__main__":
    main()
