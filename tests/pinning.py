"""Where a CPU engine's decoding threads really run: read from the operating system, not from vLLM."""

import psutil


def pinned_cores(root: psutil.Process) -> set[int]:
    """Cores that some thread of `root`'s descendants is bound to alone. The engine-core process binds
    its OpenMP threads one per core (its main thread, the first of them, is bound from the start, and
    the threads it starts share that first core), so this is the set of cores the engine decodes on.
    The other OpenMP threads exist once the engine has run a forward pass."""
    cores: set[int] = set()
    for proc in root.children(recursive=True):
        try:
            for thread in proc.threads():
                affinity = psutil.Process(thread.id).cpu_affinity()
                if len(affinity) == 1:
                    cores.update(affinity)
        except psutil.Error:  # a thread or process that ended while we looked
            continue
    return cores
