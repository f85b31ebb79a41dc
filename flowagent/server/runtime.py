"""What every call session of a server shares: flows, providers, the player, store, metrics.

Why one object: a call session needs a dozen process-wide things (the pacing clock, the flow for
its number, the provider instances, the call registry fed by `POST /call`, the record store...).
Passing one `Runtime` keeps sessions testable and makes ownership obvious — the server creates it,
the control API reads it, sessions borrow it.

Provider instances are shared by every call of every flow that names the same provider with the
same options (one Silero session for all calls; per-call state lives in the stream objects).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flowagent.asterisk.routes import RegistrationRefused
from flowagent.dialogue.call_record import call_ended_key
from flowagent.phone_numbers import region_of, to_e164
from flowagent.providers import registry
from flowagent.runner.native_player import make_player
from flowagent.runner.player import Player
from flowagent.runner.served_flow import FlowEntry, Providers
from flowagent.runner.services import RuntimeConfig
from flowagent.server.call_garbage import CallGarbage
from flowagent.server.call_store import NodeInfo, OutboxEvent, StoreBackend, StoreUnavailable
from flowagent.server.cluster import NodeKeeper
from flowagent.server.metrics import Metrics
from flowagent.server.pending_calls import PendingCalls
from flowagent.server.record_writer import RecordWriter
from flowagent.server.webhooks import Webhooks

if TYPE_CHECKING:
    from flowagent.flow.compiler import CompiledFlow
    from flowagent.providers.local.stack import LocalModels
    from flowagent.runner.services import LiveCall

log = logging.getLogger(__name__)

#: the embedded default stack when a flow has no `providers` entry for a kind
DEFAULT_PROVIDERS: dict[str, str | None] = {
    "asr": "whisper",
    "tts": "piper",
    "vad": "silero",
    "llm": None,
}


def new_event_loop() -> Any:
    """The event loop for `serve`: uvloop when installed (much cheaper per socket read, which
    is most of a call's cost), else asyncio's."""
    import asyncio

    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def tune_gc() -> None:
    """Keep garbage-collection pauses out of the 20 ms pacing budget: everything loaded so far
    (flows, models, modules) is frozen out of collection, and young collections run less often.
    Call once, after start-up loading."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 50, 50)


class FlowLoadError(Exception):
    """A flow or routes file cannot be served; the message is one plain-English sentence."""


class ProviderPool:
    """Builds providers once per (kind, name, options) and shares them between flows."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], Any] = {}
        #: id(instance) -> (name, options) it was built from (the prompt cache keys on them)
        self.specs: dict[int, tuple[str, dict[str, Any]]] = {}

    def get(self, kind: str, name: str, options: dict[str, Any]) -> Any:
        key = (kind, name, json.dumps(options, sort_keys=True, default=str))
        inst = self._cache.get(key)
        if inst is None:
            try:
                inst = registry.create(kind, name, options)
            except ImportError as exc:
                raise FlowLoadError(
                    f"The {kind} provider {name!r} needs a package that is not installed"
                    f" ({exc.name or exc}); install it (pip install 'flowagent[local]') or choose"
                    " another provider in the flow's providers section."
                ) from exc
            except KeyError as exc:
                raise FlowLoadError(str(exc.args[0]) if exc.args else str(exc)) from exc
            except Exception as exc:
                raise FlowLoadError(f"The {kind} provider {name!r} could not start: {exc}") from exc
            self._cache[key] = inst
            self.specs[id(inst)] = (name, dict(options))
        return inst

    def for_flow(self, compiled: CompiledFlow, overrides: dict[str, Any]) -> Providers:
        section = {k: dict(v) for k, v in (compiled.providers or {}).items()}
        section.update({k: dict(v) for k, v in overrides.items()})
        if "sts" in section and not any(k in overrides for k in ("asr", "llm", "tts")):
            # speech to speech: one provider hears, thinks and speaks (see runner/sts_call.py)
            sts = section["sts"]
            sts_name = str(sts.get("name"))
            inst = self.get("sts", sts_name, dict(sts.get("options") or {}))
            return Providers(asr=None, tts=None, vad=None, sts=inst, names={"sts": sts_name})
        built: dict[str, Any] = {}
        names: dict[str, str] = {}
        for kind in ("asr", "tts", "vad", "llm"):
            entry: dict[str, Any] | None = section.get(kind)
            name = entry.get("name") if entry else DEFAULT_PROVIDERS[kind]
            if name is None:
                built[kind] = None
                continue
            opts = dict((entry or {}).get("options") or {})
            built[kind] = self.get(kind, str(name), opts)
            names[kind] = str(name)
        return Providers(asr=built["asr"], tts=built["tts"], vad=built["vad"], llm=built["llm"],
                         names=names)


class FlowSet:
    """The default flow plus DID routes. Reloading swaps entries atomically per file."""

    def __init__(self, pool: ProviderPool, overrides: dict[str, Any] | None = None) -> None:
        self.pool = pool
        self.overrides = overrides or {}
        self.default: FlowEntry | None = None
        self.routes: dict[str, FlowEntry] = {}
        self.by_path: dict[Path, FlowEntry] = {}
        self.source: Path | None = None  # the flow or routes file given to serve
        self.routes_file: Path | None = None
        self.errors: dict[Path, str] = {}  # flows refused (at start-up or reload): why
        self._refused_mtime: dict[Path, float | None] = {}
        self._default_path: Path | None = None
        self._numbers: list[tuple[str, Path]] = []
        #: an extra intent scorer (the offline stack's `EmbeddingScorer`) given to every flow's
        #: matcher at load time, with the flow's examples embedded then (never during a call)
        self.intent_scorer: Any = None
        #: persistent prompt audio (`prompt_cache.PromptDiskCache`, set by serve); None = memory
        self.prompt_disk: Any = None
        #: loads each offline model when the first flow that needs it is loaded (serve sets it;
        #: None: models load lazily when a provider is built, without the MiniLM scorer)
        self.local_models: LocalModels | None = None

    def load_entry(self, path: Path) -> FlowEntry:
        from flowagent.flow.compiler import FlowInvalid, load_flow

        path = path.resolve()
        try:
            mtime = path.stat().st_mtime
            compiled = load_flow(path)
        except FlowInvalid as exc:
            raise FlowLoadError(f"{exc}") from exc
        except OSError as exc:
            raise FlowLoadError(f"{path}: cannot read the flow file ({exc.strerror}).") from exc
        self._load_models(compiled)
        providers = self.pool.for_flow(compiled, self.overrides)
        _add_scorer(compiled, self.intent_scorer)
        _warm_up(compiled)
        return FlowEntry(path=path, compiled=compiled, providers=providers, mtime=mtime,
                         disk_cache=self.prompt_disk, tts_identity=self._tts_identity(providers))

    def _load_models(self, compiled: CompiledFlow) -> None:
        """Load the offline models this flow needs that no flow loaded before (start-up or a
        hot reload); a flow that only uses cloud providers loads none."""
        if self.local_models is None:
            return
        from flowagent.providers.local.stack import models_for

        section = {k: dict(v) for k, v in (compiled.providers or {}).items()}
        if any(k in self.overrides for k in ("asr", "llm", "tts")):
            section.pop("sts", None)
        section.update({k: dict(v) for k, v in self.overrides.items()})
        try:
            from flowagent.understanding.intents import BUILTIN_INTENTS

            own_intents = bool(set(compiled.intents) - set(BUILTIN_INTENTS))
            stack = self.local_models.ensure(models_for(section, intents=own_intents))
        except Exception as exc:
            raise FlowLoadError(f"{compiled.name}: the offline speech stack could not start:"
                                f" {exc}") from exc
        if stack is not None:
            log.info("%s", stack.summary())
        if self.local_models.scorer is not None:
            self.intent_scorer = self.local_models.scorer

    def _tts_identity(self, providers: Providers) -> str:
        from flowagent.runner.prompt_cache import tts_identity

        tts = providers.tts
        if tts is None:
            return ""
        name, options = self.pool.specs.get(id(tts), (providers.names.get("tts", ""), {}))
        return tts_identity(tts, name, options)

    def load(self, source: Path) -> None:
        """Load a flow file or a routes file (YAML with `default:` and `numbers:`)."""
        self.source = source.resolve()
        data = _maybe_routes(source)
        if data is None:
            entry = self.load_entry(source)
            self.default = entry
            self.by_path = {entry.path: entry}
            return
        self.routes_file = self.source
        base = self.source.parent
        by_path: dict[Path, FlowEntry] = {}
        refused: dict[Path, str] = {}

        def entry_for(p: str) -> FlowEntry | None:
            fp = (base / p).resolve()
            if fp in refused:
                return None
            if fp not in by_path:
                # one flow that fails (its checks, its template budget, its file) is refused
                # with its message; the routes file's other flows still serve
                try:
                    by_path[fp] = self.load_entry(fp)
                except FlowLoadError as exc:
                    refused[fp] = str(exc)
                    return None
            return by_path[fp]

        default = data.get("default")
        self.default = entry_for(str(default)) if default else None
        self._default_path = (base / str(default)).resolve() if default else None
        self._numbers = [(str(n), (base / str(p)).resolve())
                         for n, p in (data.get("numbers") or {}).items()]
        routes = {}
        for number, p in (data.get("numbers") or {}).items():
            routed = entry_for(str(p))
            if routed is None:
                continue
            # E.164, so +44..., 44... and 0... written in the file all match what a trunk sends
            routes[to_e164(str(number), region_of(routed.compiled.language))] = routed
        self.routes = routes
        self.by_path = by_path
        self.errors = refused
        self._refused_mtime = {fp: _mtime(fp) for fp in refused}
        if not by_path:
            if refused:
                raise FlowLoadError(" ".join(refused.values()))
            raise FlowLoadError(f"{source}: the routes file names no flows (add default: FILE).")

    def pick(self, did: str, override: str = "") -> FlowEntry:
        if override:
            for entry in self.by_path.values():
                if override in (entry.name, entry.path.name, entry.path.stem, str(entry.path)):
                    return entry
        if did and self.routes:
            for number in {to_e164(did, region_of(e.compiled.language))
                           for e in self.routes.values()}:
                if number in self.routes:
                    return self.routes[number]
        if self.default is not None:
            return self.default
        return next(iter(self.by_path.values()))

    def reload_changed(self) -> list[str]:
        """Re-load flow files whose mtime changed. A file that fails keeps its old version.
        Returns log lines (what changed, what failed)."""
        messages: list[str] = []
        for path, entry in list(self.by_path.items()):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime == entry.mtime:
                continue
            try:
                new = self.load_entry(path)
            except FlowLoadError as exc:
                entry.mtime = mtime  # do not retry until the file changes again
                self.errors[path] = str(exc)
                messages.append(f"not reloaded, keeping the old version: {exc}")
                continue
            self.errors.pop(path, None)
            _keep_prompt_audio(entry, new)
            self.by_path[path] = new
            if self.default is entry:
                self.default = new
            for k, v in self.routes.items():
                if v is entry:
                    self.routes[k] = new
            messages.append(f"reloaded {path.name} ({new.name})")
        for path in list(self._refused_mtime):  # refused at start-up: tried again once changed
            changed = _mtime(path)
            if changed == self._refused_mtime[path]:
                continue
            self._refused_mtime[path] = changed
            try:
                new = self.load_entry(path)
            except FlowLoadError as exc:
                self.errors[path] = str(exc)
                messages.append(f"still not serving {path.name}: {exc}")
                continue
            del self._refused_mtime[path]
            self.errors.pop(path, None)
            self.by_path[path] = new
            if self._default_path == path:
                self.default = new
            for number, p in self._numbers:
                if p == path:
                    self.routes[to_e164(number, region_of(new.compiled.language))] = new
            messages.append(f"now serving {path.name} ({new.name})")
        return messages


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _keep_prompt_audio(old: FlowEntry, new: FlowEntry) -> None:
    """On reload, keep the audio of prompts whose text (and voice) did not change, so only
    changed prompts are synthesised again (even without a disk cache)."""
    if old.tts_identity != new.tts_identity or old.providers.tts is not new.providers.tts:
        return
    texts = set(new.static_prompts())
    for key, pcm in list(old.prompt_cache.items()):  # (a call may add one meanwhile)
        if key[2] in texts:
            new.prompt_cache.setdefault(key, pcm)


def _add_scorer(compiled: CompiledFlow, scorer: Any) -> None:
    """Give this flow's (freshly compiled, not yet shared) intent matcher an extra scorer, after
    embedding its examples: the engine stays pure and synchronous, and a call's first turn pays
    nothing for the flow's examples."""
    matcher = compiled.matcher
    if scorer is None or matcher is None:
        return
    try:
        scorer.prepare({k: list(v) for k, v in compiled.intents.items()})
    except Exception as exc:  # lexical matching still works without it
        log.warning("%s: intent embeddings unavailable, using word matching only: %s",
                    compiled.name, exc)
        return
    matcher.add_scorer(scorer)


def _warm_up(compiled: CompiledFlow) -> None:
    """Run a throw-away engine over a few typical answers so slot parsers and their imports
    (dates, numbers, postcodes) are loaded now, not inside the first caller's turn."""
    from flowagent.dialogue.engine import Engine
    from flowagent.dialogue.events import CallInfo, DtmfDigit, UserUtterance

    samples = ("yes", "three", "LS11 5AB", "next Friday", "Jane Smith", "07911 123456",
               "no, I said the 14th of March", "jane@example.com", "half past two", "£450")
    try:
        from flowagent.dialogue import nlu

        engine = Engine(compiled, llm_available=False)
        engine.start(CallInfo(uuid="warm-up"))
        for slot in compiled.slots.values():
            for text in samples:
                nlu.parse(compiled, engine.today(), slot, text)
        for text in samples:
            nlu.extract(compiled, engine.today(), text, dict(compiled.slots), None)
            nlu.is_correction(text)
            nlu.match_intent(compiled, text, tuple(compiled.intents))
            engine.handle(UserUtterance(text))
        engine.handle(DtmfDigit("1"))
    except Exception:  # warm-up is best effort; a real call reports real problems
        log.debug("engine warm-up failed", exc_info=True)


def _maybe_routes(path: Path) -> dict[str, Any] | None:
    """A routes file is YAML with `numbers:` and/or `default:` and no `states:`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if isinstance(data, dict) and "states" not in data and ("numbers" in data or "default" in data):
        return data
    return None


class Runtime:
    """Process-wide state shared by the AudioSocket server, the sessions and the control API."""

    def __init__(
        self,
        flows: FlowSet,
        store: StoreBackend,
        *,
        config: RuntimeConfig | None = None,
        webhooks: Webhooks | None = None,
        player: Player | None = None,
        metrics: Metrics | None = None,
        node_id: str = "",
    ) -> None:
        self.flows = flows
        self.store = store
        self.config = config or RuntimeConfig()
        self.webhooks = webhooks or Webhooks()
        # the native media loop unless FLOWAGENT_MEDIA=python or not built (native_player.py)
        self.player: Any = player or make_player()
        self.metrics = metrics or Metrics()
        #: this process among the nodes sharing the store (a label on every metric when set)
        self.node_id = node_id or "local"
        if node_id:
            self.metrics.node = node_id
        #: every record goes to the store through this queue (record_writer.py)
        self.records = RecordWriter(store, self.node_id, self.metrics)
        self.webhooks.attach(self.records, store, self.node_id, self.metrics)
        self.keeper: NodeKeeper | None = None
        #: `POST /call` registrations waiting for their connection (capped: pending_calls.py)
        self.pending = PendingCalls(
            ttl_s=self.config.pending_ttl_s, max_count=self.config.pending_max_calls,
            max_bytes=self.config.pending_max_bytes,
            max_metadata_bytes=self.config.call_metadata_max_bytes, clock=time.monotonic)
        #: uuid -> the calls in progress (for the control API and the live view)
        self.sessions: dict[str, LiveCall] = {}
        #: UUIDs of this node's connections from their UUID frame to their record
        self.claimed: set[str] = set()
        #: frees ended calls' objects on a schedule (call_garbage.py); its stats go to /metrics
        self.garbage = CallGarbage(self.config.gc_every_calls, self.config.gc_min_interval_s)
        self.metrics.gc = self.garbage.stats
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.accepting = True
        self.started_at = time.time()
        self.api_token = os.environ.get("FLOWAGENT_API_TOKEN", "")
        #: `flowagent.asterisk.transfer.Transferer` (set by serve): AMI redirect or socket path
        self.transferer: Any = None
        self._started = False

    # -- start and stop (the AudioSocket server calls these) -------------------------------------

    async def start(self, audiosocket: str = "", http: str = "") -> None:
        """Before the first call: close what this node's previous run left live, start the
        heart-beat (and the sweep of silent nodes) and the webhook outbox."""
        if self._started:
            return
        self._started = True
        cfg = self.config
        node = NodeInfo(self.node_id, audiosocket=audiosocket, http=http)
        self.keeper = NodeKeeper(
            self.store, node, active_calls=lambda: len(self.claimed),
            accepting=lambda: self.accepting,
            call_ended=self._call_ended_event if self.webhooks.enabled else None,
            heartbeat_s=cfg.heartbeat_s, lost_after_s=cfg.node_lost_after_s)
        try:
            await self.keeper.recover()
        except Exception as exc:
            self._started = False
            raise StoreUnavailable(f"The call-record store {self.store.where} failed at"
                                   f" start-up: {exc or exc.__class__.__name__}.") from exc
        self.keeper.start()
        if self.webhooks.delivery is not None:
            self.webhooks.delivery.start()

    def _call_ended_event(self, record: dict[str, Any]) -> OutboxEvent:
        return self.webhooks.event(str(record.get("uuid", "")), "call_ended", record,
                                   key=call_ended_key(str(record.get("call_id", ""))))

    async def stop(self, flush_s: float = 10.0) -> int:
        """After the last call: write what is queued (at most `flush_s`), say this node
        stopped. Returns how many call records are still unwritten."""
        left = await self.records.flush(flush_s)
        if self.keeper is not None:
            await self.keeper.stop("stopped" if left == 0 else "lost")
            self.keeper = None
        await self.records.close()
        return left

    # -- POST /call metadata ---------------------------------------------------------------------

    async def register_call(self, uuid: str, metadata: dict[str, Any]) -> None:
        """`POST /call`: metadata waits for the AudioSocket connection with this UUID — in the
        shared store when there is one (the connection may land on another node), else (or
        when the store fails) in this process."""
        key = uuid.lower()
        try:
            if self.store.shared and await self._put_shared(key, metadata):
                return
            self.pending.put(key, metadata)
        except RegistrationRefused:
            self.metrics.error("registration_refused")
            raise

    async def _put_shared(self, key: str, metadata: dict[str, Any]) -> bool:
        """Into the shared store (True), or False when it failed (kept on this node then).
        Raises RegistrationRefused when the registration is too large or the store is full."""
        cfg = self.config
        self.pending.check_size(metadata)
        try:
            held = await asyncio.wait_for(
                self.store.put_pending(key, metadata, cfg.pending_ttl_s, cfg.pending_max_calls),
                cfg.store_timeout_s)
        except Exception as exc:
            self.metrics.error("store")
            log.warning("POST /call metadata for %s kept on this node only: the store"
                        " failed (%s)", key, exc)
            return False
        if not held:
            raise RegistrationRefused(
                503, f"{cfg.pending_max_calls} calls are registered and not connected yet, the "
                     "most the store holds; try again when some have connected or expired.")
        return True

    async def take_pending(self, uuid: str) -> dict[str, Any] | None:
        """The `POST /call` metadata of this UUID: this node's, else the shared store's — where
        it is waited for up to `pending_wait_s` (the POST may still be in flight on another
        node)."""
        key = uuid.lower()
        mine = self.pending.take(key)
        if mine is not None or not self.store.shared:
            return mine
        deadline = time.monotonic() + self.config.pending_wait_s
        while True:
            try:
                meta = await asyncio.wait_for(self.store.take_pending(key),
                                              self.config.store_timeout_s)
            except Exception as exc:
                self.metrics.error("store")
                log.warning("POST /call metadata not read: the store failed (%s)", exc)
                return None
            if meta is not None:
                return meta
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)

    # -- one record per connection ---------------------------------------------------------------

    def claim_uuid(self, uuid: str) -> bool:
        """A connection sent this UUID: False when a call with it is already in progress on
        this node (the newcomer is refused, under its own record)."""
        if uuid in self.claimed:
            return False
        self.claimed.add(uuid)
        return True

    def release_uuid(self, uuid: str) -> None:
        self.claimed.discard(uuid)

    def call_ended(self) -> None:
        self.garbage.call_ended()

    def remember(self, record: dict[str, Any]) -> None:
        self.recent[record["uuid"]] = record
        self.recent.move_to_end(record["uuid"])
        while len(self.recent) > self.config.recent_records:
            self.recent.popitem(last=False)

    async def find_call(self, uuid: str) -> dict[str, Any] | None:
        """A call by UUID for the API, wherever it runs: this node's live call, else a live
        call of another node (from the store), else the latest finished record. A finished
        call never hides a live one with the same UUID."""
        session = self.sessions.get(uuid)
        if session is not None:
            return session.live_dict()
        try:
            stored = await self.store.get(uuid)
        except Exception as exc:
            self.metrics.error("store")
            log.warning("call %s not read from the store: %s", uuid, exc)
            stored = None
        recent = self.recent.get(uuid)
        if stored is not None and stored.get("live"):
            if stored.get("node") != self.node_id:
                return stored
            # ours, ended here, its final record not written yet
            return recent or stored
        if recent is not None and (stored is None or (recent.get("started_at") or 0)
                                   >= (stored.get("started_at") or 0)):
            return recent
        return stored

