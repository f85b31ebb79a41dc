"""Speculation, the call part: prepare the reply to the caller's words before the recogniser's
final arrives, and use it when the final agrees (see `speculation.py` for the why and the rules).

When: at our end of speech (and again when new interim words come while we wait for the final),
if the flow allows it (`settings.preemptive_generation`) and the engine is listening. How: a fork
of the engine answers the words heard so far; its speech (up to the first action with a side
effect) is synthesised by the speaker into a held buffer. Then, when the engine answers the
final words, `apply()` swaps the real speech for the prepared audio if they are the same (a hit)
or cancels the preparation (a miss). Everything here goes through `SpeculationHost`, the call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from flowagent.dialogue import actions as act
from flowagent.dialogue.events import Event, UserUtterance
from flowagent.runner.call_tasks import CallTasks
from flowagent.runner.interruption import Interruption
from flowagent.runner.speaker import PlayPrepared, Speaker
from flowagent.runner.speculation import Prepared, Speculation, normalise, same_plan, speech_plan
from flowagent.runner.utterance import Utterance

if TYPE_CHECKING:
    from flowagent.dialogue.engine import Engine

log = logging.getLogger(__name__)


class SpeculationHost(Protocol):
    def speculation_allowed(self) -> bool:
        """The call is live, not ending, the flow allows it, and we wait for the final."""

    def fork_engine(self) -> Engine | None:
        """A fork of the engine when it is listening for an answer (None: busy or over)."""

    async def pre_embed(self, text: str) -> None:
        """Embed `text` for intent matching off the event loop (the engine then finds it)."""

    def post(self, event: Event) -> None: ...

    def milestone_at(self, name: str, at: float) -> None: ...

    def agent_line(self, say_id: int, text: str) -> None: ...

    def speculation_outcome(self, hit: bool, why: str) -> None:
        """Whether this turn's prepared reply was used (for the latency row)."""

    def now(self) -> float: ...


class Speculator:
    def __init__(self, host: SpeculationHost, speaker: Speaker, tasks: CallTasks) -> None:
        self.host = host
        self.speaker = speaker
        self.tasks = tasks
        self._spec: Speculation | None = None  # being prepared for the turn in progress
        #: (the final's UserUtterance, its speculation): decided when the engine answers it
        self._pending: tuple[UserUtterance, Speculation] | None = None
        self._adopting: Speculation | None = None
        self._live: set[Speculation] = set()  # adopted and still producing

    # -- preparing ------------------------------------------------------------------------------

    def prepare(self, words: str) -> None:
        """The caller has stopped (or new interim words came after that): start preparing the
        answer to `words` on a fork of the engine, its audio held back."""
        if not self.host.speculation_allowed() or not words:
            return
        norm = normalise(words)
        if self._spec is not None:
            if self._spec.norm == norm:
                return  # already preparing the answer to these words
            self.drop("newer interim words")
        fork = self.host.fork_engine()
        if fork is None:
            return  # busy (tool or LLM in flight) or over: only handlers would act
        spec = Speculation(words, norm)
        self._spec = spec
        spec.task = self.tasks.spawn(self._run(spec, fork), "spec")

    async def _run(self, spec: Speculation, fork: Engine) -> None:
        """Give the fork the words, and make its speech (up to the first action with side
        effects) into the held buffer."""
        await self.host.pre_embed(spec.text)
        if self._spec is not spec:
            return
        plan = speech_plan(fork.handle(UserUtterance(spec.text, at=self.host.now())))
        for a in plan:
            spec.says[a.say_id] = (
                Utterance(a.say_id, a.text, a.interruptible, a.expect_reply)
                if isinstance(a, act.Say) else Utterance(a.say_id))
        spec.plan = plan
        for job in plan:
            if isinstance(job, act.Say):
                await self.speaker.synth_say(job, spec)
            else:
                await self.speaker.run_llm(job, job.say_id, spec)
            if spec.failed:
                return

    # -- the final words ------------------------------------------------------------------------

    def on_final(self, utterance: UserUtterance) -> None:
        """The recogniser's final words for the turn: keep the prepared reply for the engine's
        answer if it was prepared for the same words."""
        spec, self._spec = self._spec, None
        if self._pending is not None:  # never reached the engine (e.g. it had ended)
            self._missed(self._pending[1], "superseded")
            self._pending = None
        if spec is None:
            return
        why = self._unusable(spec, utterance.text)
        if why:
            self._missed(spec, why)
        else:  # same words: hit or miss once the engine has answered the final
            self._pending = (utterance, spec)

    def no_words(self) -> None:
        """The turn ended with nothing said."""
        spec, self._spec = self._spec, None
        if spec is not None:
            self._missed(spec, "nothing was said")

    def after_event(self, event: Event) -> None:
        """The engine has taken `event`: if it was the final of a prepared reply, the actions
        that follow decide hit or miss (`apply`)."""
        if self._pending is not None and self._pending[0] is event:
            self._adopting = self._pending[1]
            self._pending = None

    def apply(self, actions: list[Any]) -> list[Any]:
        """The engine has answered the final words: if its answer starts with the speech that
        was prepared, that speech is replaced by the prepared audio (a hit); otherwise the
        preparation is cancelled and the answer is carried out as usual (a miss)."""
        spec, self._adopting = self._adopting, None
        if spec is None:
            return actions
        real = speech_plan(actions)
        if spec.failed or spec.plan is None or not same_plan(spec.plan, real):
            self._missed(spec, "the answer to the final words differs")
            return actions
        self.host.speculation_outcome(True, "")
        planned = {id(a) for a in real}
        out: list[Any] = []
        for a in actions:
            if id(a) not in planned:
                out.append(a)
            elif not any(isinstance(b, Prepared) for b in out):
                out.append(Prepared(spec))  # where the first prepared utterance belongs
        return out

    def play(self, item: Prepared) -> None:
        """A hit, in the engine's action order: the held audio goes to the line at once if
        nothing of ours is queued before it; the rest is made live, in the speech queue."""
        spec = item.spec
        for a in spec.plan or ():
            if isinstance(a, act.Say):
                self.host.agent_line(a.say_id, a.text)
        self._live.add(spec)
        if self.speaker.queue_empty:
            self._go_live(spec)
        self.speaker.enqueue(PlayPrepared(spec, lambda: self._run_prepared(spec)))

    def _go_live(self, spec: Speculation) -> None:
        if spec.live:
            return
        spec.live = True
        self.speaker.utterances.update(spec.says)
        self.speaker.open_replies.update(spec.llm_open)
        spec.llm_open.clear()
        for name, at in spec.marks.items():  # reached before the final: truthful times
            self.host.milestone_at(name, at)
        spec.sink.release(self.speaker.out)
        results, spec.results = spec.results, []
        for r in results:
            self.host.post(r)

    async def _run_prepared(self, spec: Speculation) -> None:
        """The speech queue's job for a hit: play what is ready, then wait for the rest."""
        try:
            self._go_live(spec)
            task = spec.task
            if task is not None and not task.done():
                await task  # cancelling this job (an interruption) cancels the preparation too
        except Exception:  # already reported by the call's task owner
            log.debug("prepared reply failed", exc_info=True)
        finally:
            self._live.discard(spec)

    # -- dropping -------------------------------------------------------------------------------

    def _unusable(self, spec: Speculation, final: str) -> str:
        """Why the prepared reply cannot be used for the final words ("" if it may be)."""
        if normalise(final) != spec.norm:
            return "the final transcript differs"
        if spec.failed:
            return "a provider failed while preparing"
        if spec.plan is None:
            return "not prepared in time"
        return ""

    def drop(self, why: str) -> None:
        """Stop preparing (the caller spoke again, the recogniser failed...)."""
        spec, self._spec = self._spec, None
        if spec is not None:
            self._missed(spec, why)

    def _missed(self, spec: Speculation, why: str) -> None:
        """Throw the prepared reply away unheard (its LLM/TTS work is cancelled)."""
        spec.cancel()
        if spec.plan is None or spec.plan:  # an empty plan had nothing to gain or lose
            self.host.speculation_outcome(False, why)
            log.debug("prepared reply not used: %s", why)

    def on_interruption(self, interruption: Interruption) -> None:
        """Nothing prepared may play now; adopted replies still producing are cut too."""
        self.drop("barge-in")
        if self._pending is not None:
            self._missed(self._pending[1], "barge-in")
            self._pending = None
        for spec in list(self._live):
            spec.cancel()
        self._live.clear()

    def close(self) -> None:
        self.drop("the call ended")
