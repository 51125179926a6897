"""A dataparser that picks nerfstudio's Blender or nerfstudio-data parser from what the folder contains.

``ns-train shacira-tiny --data DIR`` should work on the bundled Blender-format scene and on a ``ns-process-data``
output alike, without the user naming a dataparser subcommand. Explicit subcommands (``blender-data``,
``nerfstudio-data``, ...) still work and override this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from shacira_nerf.errors import UserError


class SceneFolderError(UserError, FileNotFoundError):
    """The --data folder is missing or holds neither Blender nor nerfstudio transforms."""


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
        if not data.exists():
            raise SceneFolderError(f"--data {data}: no such folder")
        if (data / "transforms_train.json").exists():
            self.delegate = BlenderDataParserConfig(data=data).setup()
        elif (data / "transforms.json").exists() or data.suffix == ".json":
            self.delegate = NerfstudioDataParserConfig(data=data).setup()
        else:
            raise SceneFolderError(
                f"--data {data}: no transforms_train.json (Blender) or transforms.json (nerfstudio-data) found; "
                "make one with `ns-process-data images --data photos/ --output-dir scene/`"
            )
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
