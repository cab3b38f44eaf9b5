"""A whole benchmark run: find the model, warm up, then each concurrency level in turn."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aiohttp

from flashsight.bench.client import RequestResult, http_error, send
from flashsight.bench.environment import environment, gpus
from flashsight.bench.loadgen import closed_loop
from flashsight.bench.stats import LevelSummary, summarise
from flashsight.bench.workloads import RequestFactory, RequestOptions, Workload, requests_per_level

CONNECT_TIMEOUT_S = 10.0


class Progress(Protocol):
    """Told as the run goes, so people see each level's row when it is measured."""

    def started(self, model: str) -> None: ...

    def level_done(self, level: LevelSummary) -> None: ...


class BenchError(Exception):
    """The run could not start; the message says why in one line."""


@dataclass(frozen=True)
class BenchSettings:
    base_url: str  # ending in /v1, as the openai SDK takes it
    workload: Workload
    concurrency: tuple[int, ...]
    seed: int
    model: str | None = None  # None: the first id GET /models lists
    api_key: str | None = field(default=None, repr=False)
    requests: int | None = None  # per level; None: max(10, 3 x concurrency)
    thinking: str = "off"
    timeout_s: float = 600.0

    def public(self) -> dict[str, Any]:
        """The settings as the report records them: never the API key."""
        settings = asdict(self) | {"api_key_given": self.api_key is not None}
        settings.pop("api_key")
        return settings

    def requests_at(self, concurrency: int) -> int:
        return self.requests if self.requests is not None else requests_per_level(concurrency)


@dataclass
class BenchReport:
    settings: dict[str, Any]
    environment: dict[str, Any]
    warmup: dict[str, Any]
    levels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(level["errors"] for level in self.levels)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def run_benchmark(settings: BenchSettings, progress: Progress) -> BenchReport:
    base_url = settings.base_url.rstrip("/")
    chat_url = f"{base_url}/chat/completions"
    async with _client(settings, 1) as session:
        model = settings.model or await first_model(session, base_url)
        factory = RequestFactory(settings.workload, RequestOptions(model, settings.thinking), settings.seed)
        progress.started(model)
        report = BenchReport(settings.public() | {"model": model}, environment(base_url, model), {})
        warmup = await send(session, chat_url, factory.prepare_one(0))  # not counted, as the anchors do
        report.warmup = _warmup_record(warmup)
    next_index = 1
    for concurrency in settings.concurrency:
        prepared = factory.prepare(range(next_index, next_index + settings.requests_at(concurrency)))
        next_index += len(prepared)
        # Fresh connections per level: while the bodies were built, the server may have closed
        # the idle ones (uvicorn does after 5 s), and a POST on such a one fails.
        async with _client(settings, concurrency) as session:
            results, duration = await closed_loop(session, chat_url, prepared, concurrency)
        summary = summarise(concurrency, results, duration, statistics.fmean(p.jpeg_bytes for p in prepared))
        progress.level_done(summary)
        report.levels.append(_level_record(summary, results, report.environment["server_is_local"]))
    return report


async def first_model(session: aiohttp.ClientSession, base_url: str) -> str:
    url = f"{base_url}/models"
    try:
        async with session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                hint = "is --base-url the API root, e.g. http://host:port/v1?" if response.status == 404 else "or give --model"
                raise BenchError(f"GET {url} answered {await http_error(response)}; {hint}")
            listing = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BenchError(f"could not reach {url} ({reason}); is --base-url right?") from exc
    except ValueError as exc:
        raise BenchError(f"GET {url} listed no model; give --model") from exc
    try:
        return str(listing["data"][0]["id"])
    except (KeyError, IndexError, TypeError) as exc:
        raise BenchError(f"GET {url} listed no model; give --model") from exc


def _client(settings: BenchSettings, connections: int) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return aiohttp.ClientSession(
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=settings.timeout_s, connect=CONNECT_TIMEOUT_S),
        connector=aiohttp.TCPConnector(limit=connections),  # one per client, kept alive
        trust_env=False,  # a proxy from the environment would sit between the client and the server
    )


def _warmup_record(result: RequestResult) -> dict[str, Any]:
    return {"ok": result.ok, "ttft_s": result.ttft_s, "e2e_s": result.e2e_s, "error": result.error}


def _level_record(summary: LevelSummary, results: list[RequestResult], local: bool) -> dict[str, Any]:
    record = summary.as_dict()
    record["gpus_after"] = gpus() if local else None  # the server's memory with its caches filled
    record["per_request"] = [asdict(result) | {"decode_tok_s": result.decode_tok_s} for result in results]
    return record
