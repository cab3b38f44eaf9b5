"""With benchmarks/trace_site on PYTHONPATH and FLASHSIGHT_STEP_TRACE set, every process that
imports the engine (in-process benchmarks, `flashsight serve`'s engine process, spawned with the
same environment) traces a window of its steps: see benchmarks/step_trace.py."""

import importlib.abc
import importlib.machinery
import os
import sys


class _PatchEngineOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "flashsight.engine.engine":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module

        def run_then_patch(module):
            run_module(module)
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from step_trace import install_from_environment

            install_from_environment(module.Engine)

        spec.loader.exec_module = run_then_patch
        return spec


if os.environ.get("FLASHSIGHT_STEP_TRACE"):
    sys.meta_path.insert(0, _PatchEngineOnImport())
