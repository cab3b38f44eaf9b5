"""With benchmarks/trace_site on PYTHONPATH, every process that imports the engine (in-process
benchmarks, `flashsight serve`'s engine process, spawned with the same environment) traces a
window of its steps when FLASHSIGHT_STEP_TRACE is set (see benchmarks/step_trace.py). A/B knobs
for the engine process, which no command-line flag reaches:
  FLASHSIGHT_SWITCH_INTERVAL_MS  the GIL's switch interval
  FLASHSIGHT_PDL_ORDER           "wait" or "trigger": whether a kernel lets the next one in before
                                 or after its own wait (kernels/dependent_launch.py)
  FLASHSIGHT_PREFETCH_COLUMNS    of each weight row a decode product asks of L2 before its wait
                                 (kernels/skinny_matmul.py)"""

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
            _set_kernel_knobs()

        spec.loader.exec_module = run_then_patch
        return spec


def _set_kernel_knobs():
    if os.environ.get("FLASHSIGHT_PDL_ORDER"):
        from flashsight.engine.kernels import dependent_launch

        orders = {"wait": dependent_launch.WAIT_FIRST, "trigger": dependent_launch.TRIGGER_FIRST}
        dependent_launch.allow(True, orders[os.environ["FLASHSIGHT_PDL_ORDER"]])
    if os.environ.get("FLASHSIGHT_PREFETCH_COLUMNS"):
        from flashsight.engine.kernels import skinny_matmul

        skinny_matmul.PREFETCH_COLUMNS = int(os.environ["FLASHSIGHT_PREFETCH_COLUMNS"])


_KNOBS = ("FLASHSIGHT_STEP_TRACE", "FLASHSIGHT_SWITCH_INTERVAL_MS", "FLASHSIGHT_PDL_ORDER", "FLASHSIGHT_PREFETCH_COLUMNS")
if any(os.environ.get(knob) for knob in _KNOBS):
    sys.meta_path.insert(0, _PatchEngineOnImport())
