"""With benchmarks/trace_site on PYTHONPATH, every process that imports the engine (in-process
benchmarks, `flashsight serve`'s engine process, spawned with the same environment) traces a
window of its steps when FLASHSIGHT_STEP_TRACE is set (see benchmarks/step_trace.py). A/B knobs
for the engine process, which no command-line flag reaches:
  FLASHSIGHT_SWITCH_INTERVAL_MS  the GIL's switch interval
  FLASHSIGHT_PDL_ORDER           "wait" or "trigger": whether a kernel lets the next one in before
                                 or after its own wait (kernels/dependent_launch.py)
  FLASHSIGHT_PREFETCH_COLUMNS    of each weight row a decode product asks of L2 before its wait
                                 (kernels/skinny_matmul.py)
and for the server's process, FLASHSIGHT_RECEIVE_MARKS=FILE marks where each chat request's receive
stage goes (benchmarks/receive_marks.py)."""

import importlib.abc
import importlib.machinery
import os
import sys


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` once the named module has been executed."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module

        def run_then_patch(module):
            run_module(module)
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            self.patch(module)

        spec.loader.exec_module = run_then_patch
        return spec


def _patch_engine(module):
    from step_trace import install_from_environment

    install_from_environment(module.Engine)
    if os.environ.get("FLASHSIGHT_SWITCH_INTERVAL_MS"):
        sys.setswitchinterval(float(os.environ["FLASHSIGHT_SWITCH_INTERVAL_MS"]) / 1e3)
    _set_kernel_knobs()


def _set_kernel_knobs():
    if os.environ.get("FLASHSIGHT_PDL_ORDER"):
        from flashsight.engine.kernels import dependent_launch

        orders = {"wait": dependent_launch.WAIT_FIRST, "trigger": dependent_launch.TRIGGER_FIRST}
        dependent_launch.allow(True, orders[os.environ["FLASHSIGHT_PDL_ORDER"]])
    if os.environ.get("FLASHSIGHT_PREFETCH_COLUMNS"):
        from flashsight.engine.kernels import skinny_matmul

        skinny_matmul.PREFETCH_COLUMNS = int(os.environ["FLASHSIGHT_PREFETCH_COLUMNS"])


def _patch_chat_route(module):
    from receive_marks import install

    install(os.environ["FLASHSIGHT_RECEIVE_MARKS"])


_KNOBS = ("FLASHSIGHT_STEP_TRACE", "FLASHSIGHT_SWITCH_INTERVAL_MS", "FLASHSIGHT_PDL_ORDER", "FLASHSIGHT_PREFETCH_COLUMNS")
if any(os.environ.get(knob) for knob in _KNOBS):
    sys.meta_path.insert(0, _PatchOnImport("flashsight.engine.engine", _patch_engine))
if os.environ.get("FLASHSIGHT_RECEIVE_MARKS"):
    sys.meta_path.insert(0, _PatchOnImport("flashsight.server.routes.chat", _patch_chat_route))
