"""Constrained decoding with xgrammar: at each step only tokens that keep the output inside the
grammar (any JSON object, a JSON schema, or an EBNF grammar) may be sampled.

xgrammar is chosen over llguidance and outlines-core because it compiles JSON schemas to a
token-level automaton once per schema (cached here) and fills a step's mask in microseconds on
the CPU, with a bitmask kernel for CUDA tensors too; vLLM and SGLang ship it by default, so its
JSON-schema coverage is the one clients meet elsewhere.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache

import torch

from flashsight.engine.errors import InvalidRequestError
from flashsight.engine.types import GuidedDecoding


class GrammarCompiler:
    """Compiles and caches grammars for one tokenizer. Thread-safe: requests compile off the
    engine thread, so a slow schema never stalls other requests' steps."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int]):
        import xgrammar

        self._xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
        self._compiler = xgrammar.GrammarCompiler(info)
        self.vocab_size = vocab_size
        self._lock = threading.Lock()
        self._compile = lru_cache(maxsize=256)(self._compile_uncached)

    def compile(self, guided: GuidedDecoding):
        with self._lock:
            return self._compile(guided.kind, guided.spec)

    def _compile_uncached(self, kind: str, spec: str):
        try:
            if kind in ("json_object", "json_schema"):
                # Compact JSON: free whitespace lets a model pad forever without closing anything.
                schema = spec if kind == "json_schema" else '{"type": "object"}'
                return self._compiler.compile_json_schema(schema, strict_mode=False, any_whitespace=False)
            if kind == "tool_calls":
                return self._compiler.compile_structural_tag(self._tool_call_tag(json.loads(spec)))
            return self._compiler.compile_grammar(spec)
        except Exception as exc:  # xgrammar names the unsupported feature or the syntax error
            message = " ".join(str(exc).split())[:300]
            param = "tools" if kind == "tool_calls" else "response_format"
            raise InvalidRequestError(f"the {kind.replace('_', ' ')} cannot be enforced: {message}", param=param) from None

    def _tool_call_tag(self, spec: dict):
        # xgrammar's GLM format (named for GLM-4.7) also accepts GLM-4.5/4.6's newlines between
        # the name and each <arg_key>/<arg_value> pair; string arguments stay raw, others JSON.
        # One whitespace character at most between parts: enough for the newlines GLM writes.
        return self._xgr.get_builtin_structural_tag(
            "glm_4_7", tools=spec["tools"], tool_choice=spec["tool_choice"], reasoning=False,
            parallel_tool_calls=spec.get("parallel_tool_calls", True), max_whitespace_cnt=1,
        )  # fmt: skip

    def matcher(self, compiled) -> GrammarGuide:
        return GrammarGuide(self._xgr, compiled, self.vocab_size)


class GrammarGuide:
    """One request's position in its grammar."""

    def __init__(self, xgr, compiled, vocab_size: int):
        self._xgr = xgr
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits of tokens the grammar forbids next to -inf (in place)."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        bitmask = self._bitmask.to(logits.device, non_blocking=True)
        self._xgr.apply_token_bitmask_inplace(logits.view(1, -1), bitmask)
        return logits

    def accept(self, token: int) -> None:
        accepted = self._matcher.accept_token(token)
        assert accepted, "the sampler chose a token the grammar forbids"

    @property
    def finished(self) -> bool:
        """The output is complete (the grammar accepted a stop token)."""
        return self._matcher.is_terminated()
