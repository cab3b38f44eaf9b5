"""Start-up to ready with the weights on local disk: write a full-size checkpoint with real
safetensors shards (random bf16 values), drop the page cache when allowed, then time `Engine`.

    python benchmarks/startup.py [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.testmodel import write_test_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="/tmp/flashsight-full-weights")
    args = parser.parse_args()
    path = Path(args.dir)
    if not any(path.glob("*.safetensors")):
        start = time.perf_counter()
        write_test_model(path, size="full", write_weights=True)
        print(f"wrote the checkpoint in {time.perf_counter() - start:.0f} s", flush=True)
    size_gb = sum(f.stat().st_size for f in path.glob("*.safetensors")) / 1e9
    dropped = subprocess.run("sync && echo 3 > /proc/sys/vm/drop_caches", shell=True).returncode == 0
    start = time.perf_counter()
    engine = Engine(EngineConfig(model=str(path)))
    ready = time.perf_counter() - start
    print(json.dumps({"weights_gb": round(size_gb, 1), "page_cache_dropped": dropped, "startup_to_ready_s": round(ready, 1),
                      "is_ready": engine.is_ready()}))  # fmt: skip


if __name__ == "__main__":
    main()
