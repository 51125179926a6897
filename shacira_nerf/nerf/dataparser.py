"""A dataparser that picks nerfstudio's Blender or nerfstudio-data parser from what the folder contains.

``ns-train shacira --data DIR`` and ``ns-train shacira-tiny --data DIR`` work on a Blender-format scene (the bundled
one, NeRF-synthetic) and on a ``ns-process-data`` output alike, without the user naming a dataparser subcommand; the
parser says which format it found. Explicit subcommands (``blender-data``, ``nerfstudio-data``, ...) still work and
override this.

Two checks run earlier, when tyro builds the method's config (``ShaciraTrainerConfig.__post_init__``), before
nerfstudio prints or saves anything: ``check_scene_folder`` (one line, exit 1, nothing written) and
``blender_benchmark_hint`` (nerfstudio's Blender benchmark flags the command did not set, printed as a suggestion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple, Type

from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from shacira_nerf.errors import UserError


class SceneFolderError(UserError, FileNotFoundError):
    """The --data folder is missing or holds neither Blender nor nerfstudio transforms."""


def scene_format(data: Path) -> str:
    """``"blender"`` or ``"nerfstudio"``, from the files in the --data folder; a SceneFolderError otherwise."""
    data = Path(data)
    if not data.exists():
        raise SceneFolderError(f"--data {data}: no such folder")
    if data.is_dir() and (data / "transforms_train.json").is_file():
        return "blender"
    if (data.is_dir() and (data / "transforms.json").is_file()) or (data.is_file() and data.suffix == ".json"):
        return "nerfstudio"
    raise SceneFolderError(
        f"--data {data}: no transforms_train.json (Blender) or transforms.json (nerfstudio-data) found; "
        "make one with `ns-process-data images --data photos/ --output-dir scene/`"
    )


def check_scene_folder(data: Path, dataparser: Any) -> None:
    """Fail with one line if --data cannot be read: missing, or (for auto-data) in neither known format."""
    if isinstance(dataparser, AutoDataParserConfig):
        scene_format(data)
    elif not Path(data).exists():
        raise SceneFolderError(f"--data {data}: no such folder")


BLENDER_BENCHMARK: List[Tuple[str, Any]] = [
    ("background_color", "white"),
    ("proposal_initial_sampler", "uniform"),
    ("near_plane", 2.0),
    ("far_plane", 6.0),
    ("camera_optimizer.mode", "off"),
    ("use_average_appearance_embedding", False),
    ("distortion_loss_mult", 0.0),
    ("disable_scene_contraction", True),
]
"""The model flags of nerfstudio's Blender benchmark for nerfacto (``scripts/benchmarking/launch_train_blender.sh``
at v1.1.5), as (option under ``--pipeline.model.``, value)."""


def _flag_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def blender_benchmark_flags(model: Any) -> List[str]:
    """The benchmark's flags whose value the model config does not have yet, as ``--pipeline.model.X value``."""
    flags = []
    for name, wanted in BLENDER_BENCHMARK:
        value = model
        for part in name.split("."):
            value = getattr(value, part, None)
        if value != wanted:
            flags.append(f"--pipeline.model.{name.replace('_', '-')} {_flag_value(wanted)}")
    return flags


def blender_benchmark_hint(data: Path, dataparser: Any, model: Any) -> Optional[str]:
    """For a Blender-format folder read by auto-data, nerfstudio's benchmark flags not yet set, as a suggestion.

    A suggestion, not applied: the format does not say where the cameras are. The flags (near 2, far 6, no scene
    contraction, white background) fit the NeRF-synthetic scenes (cameras on a radius-4 sphere, object inside
    +-1.5), not every scene written in that format; and applied flags would differ from the command the user typed.
    """
    if not isinstance(dataparser, AutoDataParserConfig) or scene_format(data) != "blender":
        return None
    flags = blender_benchmark_flags(model)
    if not flags:
        return None
    return (
        f"note: {data} is in the Blender format; for NeRF-synthetic scenes nerfstudio's Blender benchmark also sets "
        "(add them to use its settings):\n  " + " ".join(flags)
    )


def print_blender_benchmark_hint(data: Path, dataparser: Any, model: Any) -> None:
    hint = blender_benchmark_hint(data, dataparser, model)
    if hint:
        print(hint, flush=True)


@dataclass
class AutoDataParserConfig(DataParserConfig):
    """Blender format when the folder has transforms_train.json, nerfstudio-data when it has transforms.json."""

    _target: Type = field(default_factory=lambda: AutoDataParser)
    data: Path = Path("data/shacira-toy")
    """Scene folder: Blender format (transforms_{train,val,test}.json) or nerfstudio-data (transforms.json)."""


class AutoDataParser(DataParser):
    """Delegates to the Blender or nerfstudio dataparser."""

    config: AutoDataParserConfig

    def __init__(self, config: AutoDataParserConfig) -> None:
        super().__init__(config)
        data = Path(config.data)
        if scene_format(data) == "blender":
            self.delegate = BlenderDataParserConfig(data=data).setup()
            found, parser = "transforms_train.json (Blender format)", "blender-data"
        else:
            self.delegate = NerfstudioDataParserConfig(data=data).setup()
            found, parser = "transforms.json (nerfstudio-data format)", "nerfstudio-data"
        print(f"auto-data: {data} has {found}: reading it with nerfstudio's {parser} dataparser", flush=True)
        self.includes_time = self.delegate.includes_time

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        return self.delegate._generate_dataparser_outputs(split, **kwargs)


def _specification():
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    return DataParserSpecification(
        config=AutoDataParserConfig(), description="Blender or nerfstudio-data, chosen from the folder's contents"
    )


auto_dataparser = _specification()
"""Registered as the ``auto-data`` dataparser subcommand (and the default of ``shacira-tiny``)."""
