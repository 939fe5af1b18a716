"""Hatchling build hook: generate the protobuf/gRPC code before building.

Fires for wheels and editable installs alike, so `pip install -e .` leaves
services/rlhf/v1/*_pb2*.py in place. The generated files are gitignored.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ProtoBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        spec = importlib.util.spec_from_file_location("gen_protos", root / "scripts" / "gen_protos.py")
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        generated = module.generate(root / "services")
        if version != "editable":
            # Generated files are gitignored; force them into the wheel.
            for path in generated + [root / "services" / "rlhf" / "v1" / "__init__.py"]:
                rel = path.relative_to(root / "services")
                build_data["force_include"][str(path)] = str(rel)
