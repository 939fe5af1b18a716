"""Generate Python code for protos/ into services/rlhf/v1/.

Run by the hatchling build hook (wheel and editable installs) and by hand.
The proto path mirrors the Python package (protos/rlhf/v1 -> rlhf.v1), so the
absolute imports protoc writes (`from rlhf.v1 import chat_pb2`) work as they are.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "services"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_root: Path = OUT_ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) and return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--pyi_out={out_root}",
        *files,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    pkg = out_root / "rlhf" / "v1"
    init = pkg / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from protos/rlhf/v1 by scripts/gen_protos.py. Do not edit."""\n')
    return sorted(pkg.glob("*_pb2*.py*"))


if __name__ == "__main__":
    for f in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_ROOT):
        print(f)
