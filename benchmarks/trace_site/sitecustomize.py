"""With benchmarks/trace_site on PYTHONPATH, every process that imports the engine (in-process
benchmarks, `flashsight serve`'s engine process, spawned with the same environment) traces a
window of its steps when FLASHSIGHT_STEP_TRACE is set (see benchmarks/step_trace.py), and sets
the GIL's switch interval to FLASHSIGHT_SWITCH_INTERVAL_MS and the prompt builder's image lanes to
FLASHSIGHT_IMAGE_LANES when those are set: A/B knobs for the engine process, which no command-line
flag reaches."""

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
            if os.environ.get("FLASHSIGHT_IMAGE_LANES"):
                module.PromptBuilder = _with_lanes(module.PromptBuilder, int(os.environ["FLASHSIGHT_IMAGE_LANES"]))

        spec.loader.exec_module = run_then_patch
        return spec


def _with_lanes(builder: type, lanes: int) -> type:
    class PromptBuilderWithLanes(builder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "image_lanes": lanes})

    return PromptBuilderWithLanes


_KNOBS = ("FLASHSIGHT_STEP_TRACE", "FLASHSIGHT_SWITCH_INTERVAL_MS", "FLASHSIGHT_IMAGE_LANES")
if any(os.environ.get(knob) for knob in _KNOBS):
    sys.meta_path.insert(0, _PatchEngineOnImport())
