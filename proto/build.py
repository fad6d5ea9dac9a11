"""Generate the Python stubs of proto/aligner/v1/aligner.proto (grpcio-tools).

The stubs are committed (importable as `proto.aligner.v1`); a unit test (`test_grpc_convert.py`)
regenerates them and fails when the committed ones are stale. Run `make proto`
(`python -m proto.build`) after changing the proto.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = Path("proto/aligner/v1/aligner.proto")
GENERATED = ("aligner_pb2.py", "aligner_pb2.pyi", "aligner_pb2_grpc.py")


def generate(out_dir: Path = ROOT) -> list[Path]:
    """Write the stubs under `out_dir`/proto/aligner/v1/; their paths."""
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    (Path(out_dir) / PROTO.parent).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return [Path(out_dir) / PROTO.parent / name for name in GENERATED]


if __name__ == "__main__":
    for path in generate():
        print(path, file=sys.stderr)
