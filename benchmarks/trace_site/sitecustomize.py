"""With benchmarks/trace_site on PYTHONPATH, every process that imports the engine (in-process
benchmarks, `flashsight serve`'s engine process, spawned with the same environment) traces a
window of its steps when FLASHSIGHT_STEP_TRACE is set (see benchmarks/step_trace.py), and sets
the GIL's switch interval to FLASHSIGHT_SWITCH_INTERVAL_MS when that is set: an A/B knob for the
engine process, which no command-line flag reaches."""

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
            if os.environ.get("FLASHSIGHT_SWITCH_INTERVAL_MS"):
                sys.setswitchinterval(float(os.environ["FLASHSIGHT_SWITCH_INTERVAL_MS"]) / 1e3)

        spec.loader.exec_module = run_then_patch
        return spec


_KNOBS = ("FLASHSIGHT_STEP_TRACE", "FLASHSIGHT_SWITCH_INTERVAL_MS")
if any(os.environ.get(knob) for knob in _KNOBS):
    sys.meta_path.insert(0, _PatchEngineOnImport())
