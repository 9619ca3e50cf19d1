"""``search_qa``: multi-hop question answering with a search tool over a generated knowledge base.

The task seed generates a small, consistent world of invented entities (so no model knows the
answers beforehand): ``entities`` names split over four types (countries, cities, people,
companies) and the true facts relating them, each of one of seven functional relations:

* capital: "The capital of Veloria is Tarnis." (question phrase "the capital of X")
* country_of: "Tarnis is a city in Veloria." ("the country of X")
* mayor: "The mayor of Tarnis is Ada Morwen." ("the mayor of X")
* birthplace: "Ada Morwen was born in Tarnis." ("the birthplace of X")
* employer: "Ada Morwen works for Quellex." ("the employer of X")
* founder: "Quellex was founded by Ada Morwen." ("the founder of X")
* headquarters: "Quellex is headquartered in Tarnis." ("the headquarters of X")

A question composes ``hops`` relations from a start entity through distinct entities, e.g.
(2 hops) "Who is the mayor of the capital of Veloria?"; since every relation is a function,
the answer is unique. The knowledge base holds the ``hops`` facts of the chain and
``distractors`` other true facts of the world, in an order drawn from the seed.

Actions:

* ``search[query]``: returns the facts of the knowledge base that share the most words with
  the query (lower-cased words of letters and digits, without "the", "of", "is", "a", "in",
  "by", "was", "for", "who", "what", ...; score = the number of distinct query words in the
  fact; every fact with the top score > 0 is returned, in knowledge-base order; none when no
  word matches). Searching an entity's name therefore returns every fact that mentions it, and
  "mayor Tarnis" returns the one fact about Tarnis' mayor.
* ``answer[text]``: ends the episode (``terminated``) with outcome 1 if the text equals the
  gold answer (after lower-casing and collapsing spaces), else 0.
* anything else: an invalid no-op ("Unknown action ...", ``info["valid"] = False``) that costs
  a step. Any query and any answer text are valid. After ``max_steps`` steps without an answer
  the episode is cut (``truncated``, outcome 0). Every step before the last gives reward 0.

``valid_actions()`` lists ``search[E]`` and then ``answer[E]`` for every entity E seen so far (in
the question or in a search result), alphabetically, so that a small policy can act; a
2-hop question is answered in 3 steps: search the start entity, search the bridge entity, answer.

Observation: ``"Question: ..."`` and then the result of the last action. ``info["state"]`` is
the question and the set of facts retrieved so far (no history: searching A then B reaches the
same state as B then A, and a repeated search leaves it unchanged); ``info["gold_answer"]`` holds
the gold answer on every step (from ``reset`` on), so that a policy that can score text can
compute ``p_answer``, its probability of the gold answer (e.g. of ``answer[GOLD]``) given the
context before each step, as IGPO's information-gain reward needs; ``info["question"]`` holds
the question.

Why step credit matters here: the outcome rewards only the final answer, but it depends on
which searches came before (the right bridge entity, in order); the information states recur
across a group (after "search the start entity" every episode is in the same state), and
``p_answer`` rises on the turns that retrieved a useful fact, which IGPO turns into per-turn
rewards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from stepcredit.envs.base import EnvError, StepResult, register_env

__all__ = ["SearchQA", "retrieve", "search_qa"]

TYPES = ("country", "city", "person", "company")

# relation -> (subject type, object type, fact template, question phrase)
RELATIONS: dict[str, tuple[str, str, str, str]] = {
    "capital": ("country", "city", "The capital of {s} is {o}.", "the capital of {}"),
    "country_of": ("city", "country", "{s} is a city in {o}.", "the country of {}"),
    "mayor": ("city", "person", "The mayor of {s} is {o}.", "the mayor of {}"),
    "birthplace": ("person", "city", "{s} was born in {o}.", "the birthplace of {}"),
    "employer": ("person", "company", "{s} works for {o}.", "the employer of {}"),
    "founder": ("company", "person", "{s} was founded by {o}.", "the founder of {}"),
    "headquarters": ("company", "city", "{s} is headquartered in {o}.", "the headquarters of {}"),
}

STOPWORDS = frozenset("the of is a an in by was for who what where which and to at on".split())
_SYLLABLES = (
    "ka lo mi ra ven tor sel dun bri mar quel zan or est ith al pe ro na vi gal thu bel cor dra fen hal "
    "jor lin mor nes pra sul tam ul wyn xo yar zel"
).split()
_SUFFIX = {"country": ("ia", "land", "or"), "city": ("ton", "burg", "mouth", "a"), "company": ("ex", "co", "ix")}
_RESERVED = STOPWORDS | {w for rel in RELATIONS.values() for w in re.findall(r"[a-z]+", rel[2] + " " + rel[3])}


def _words(text: str) -> set[str]:
    """The retrieval words of a text: lower-cased runs of letters/digits, stopwords removed."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


def retrieve(query: str, facts: list[str]) -> list[int]:
    """Indices of the facts that share the most retrieval words with ``query`` (see the module).

    Args:
        query: the search text.
        facts: the knowledge base, in order.

    Returns:
        The indices (ascending) of every fact whose score, the number of distinct query words
        it contains, equals the top score, if that is > 0; else [].
    """
    q = _words(query)
    scores = [len(q & _words(f)) for f in facts]
    top = max(scores, default=0)
    return [i for i, s in enumerate(scores) if s == top] if top > 0 else []


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())


class SearchQA:
    """The environment (see the module docstring)."""

    _ACTION = re.compile(r"\s*(search|answer)\[(.*)\]\s*", re.S)

    def __init__(self, entities: int, hops: int, distractors: int, max_steps: int):
        self.entities, self.hops, self.distractors, self.max_steps = entities, hops, distractors, max_steps
        self.question = ""
        self.gold_answer = ""
        self.facts: list[str] = []  # the knowledge base, in order
        self._fact_entities: list[tuple[str, str]] = []
        self._chain: list[str] = []  # start entity, bridge entities..., answer
        self._known: set[int] = set()
        self._seen: list[str] = []
        self._t = 0
        self._done = True
        self._valid: list[str] = []

    # ---- generation -------------------------------------------------------------------------
    def _names(self, rng: np.random.Generator, counts: dict[str, int]) -> dict[str, list[str]]:
        used: set[str] = set()

        def word(suffixes: tuple[str, ...] = ("",)) -> str:
            while True:
                w = "".join(_SYLLABLES[int(k)] for k in rng.integers(len(_SYLLABLES), size=2))
                w += suffixes[int(rng.integers(len(suffixes)))]
                if w not in used and w not in _RESERVED:
                    used.add(w)
                    return w.capitalize()

        names = {t: [word(_SUFFIX[t]) for _ in range(counts[t])] for t in ("country", "city", "company")}
        names["person"] = [f"{word()} {word()}" for _ in range(counts["person"])]
        return names

    def _generate(self, rng: np.random.Generator) -> None:
        counts = {t: self.entities // 4 + (1 if i < self.entities % 4 else 0) for i, t in enumerate(("city", "person", "company", "country"))}
        names = self._names(rng, counts)
        countries, cities, people, companies = (names[t] for t in TYPES)
        # a consistent world (names are random, so list order means nothing): every city lies in
        # a country, country i's capital is city i (one of its own cities)
        world: dict[tuple[str, str], str] = {}
        for i, city in enumerate(cities):
            world[(city, "country_of")] = countries[i] if i < len(countries) else countries[int(rng.integers(len(countries)))]
        for i, country in enumerate(countries):
            world[(country, "capital")] = cities[i]
        for city, person in zip(cities, [people[int(k)] for k in rng.permutation(len(people))], strict=False):
            world[(city, "mayor")] = person
        for person in people:
            world[(person, "birthplace")] = cities[int(rng.integers(len(cities)))]
            world[(person, "employer")] = companies[int(rng.integers(len(companies)))]
        for company in companies:
            world[(company, "founder")] = people[int(rng.integers(len(people)))]
            world[(company, "headquarters")] = cities[int(rng.integers(len(cities)))]
        chain, relations = self._draw_chain(rng, world, [e for t in TYPES for e in names[t]])
        chain_keys = list(zip(chain[:-1], relations, strict=True))
        others = [k for k in world if k not in set(chain_keys)]
        picked = [others[int(k)] for k in rng.choice(len(others), size=min(self.distractors, len(others)), replace=False)]
        keys = chain_keys + picked
        keys = [keys[int(k)] for k in rng.permutation(len(keys))]
        self.facts = [RELATIONS[rel][2].format(s=s, o=world[(s, rel)]) for s, rel in keys]
        self._fact_entities = [(s, world[(s, rel)]) for s, rel in keys]
        self._chain = chain
        phrase = "{}"
        for rel in reversed(relations):
            phrase = phrase.format(RELATIONS[rel][3])
        asks_person = RELATIONS[relations[-1]][1] == "person"
        self.question = f"{'Who' if asks_person else 'What'} is {phrase.format(chain[0])}?"
        self.gold_answer = chain[-1]

    def _draw_chain(
        self, rng: np.random.Generator, world: dict[tuple[str, str], str], entities: list[str]
    ) -> tuple[list[str], list[str]]:
        """A path of ``hops`` relations through distinct entities (depth-first, seeded order)."""
        rel_names = list(RELATIONS)

        def extend(path: list[str], rels: list[str]) -> tuple[list[str], list[str]] | None:
            if len(rels) == self.hops:
                return path, rels
            for k in rng.permutation(len(rel_names)):
                obj = world.get((path[-1], rel_names[int(k)]))
                if obj is not None and obj not in path:
                    found = extend(path + [obj], rels + [rel_names[int(k)]])
                    if found:
                        return found
            return None

        for k in rng.permutation(len(entities)):
            found = extend([entities[int(k)]], [])
            if found:
                return found
        raise EnvError(f"environment 'search_qa': no {self.hops}-hop question in a world of {self.entities} entities")

    # ---- protocol ---------------------------------------------------------------------------
    def _state_key(self) -> str:
        return f"question: {self.question} | known: " + " | ".join(self.facts[i] for i in sorted(self._known))

    def _admissible(self) -> list[str]:
        seen = sorted(self._seen)
        return [f"search[{e}]" for e in seen] + [f"answer[{e}]" for e in seen]

    def _info(self, **extra: Any) -> dict[str, Any]:
        return {"state": self._state_key(), "gold_answer": self.gold_answer, "question": self.question, **extra}

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        self._generate(np.random.default_rng(seed))
        self._known, self._seen = set(), [self._chain[0]]
        self._t, self._done = 0, False
        self._valid = self._admissible()
        obs = f"Question: {self.question}\nUse search[query] to look up facts and answer[text] to answer."
        return obs, self._info()

    def valid_actions(self) -> list[str]:
        return list(self._valid)

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._t += 1
        m = self._ACTION.fullmatch(action) if isinstance(action, str) else None
        answered, success = False, False
        if m is None:
            result = f"Unknown action {action!r}: use search[query] or answer[text]."
        elif m.group(1) == "search":
            hits = retrieve(m.group(2), self.facts)
            if hits:
                result = f"search[{m.group(2)}] found:\n" + "\n".join(f"- {self.facts[i]}" for i in hits)
            else:
                result = f"search[{m.group(2)}] found nothing."
            self._known.update(hits)
            for i in hits:
                for e in self._fact_entities[i]:
                    if e not in self._seen:
                        self._seen.append(e)
            self._valid = self._admissible()
        else:
            answered = True
            success = _normalise(m.group(2)) == _normalise(self.gold_answer)
            result = f"You answered {m.group(2)!r}: {'correct' if success else 'incorrect'}."
        truncated = not answered and self._t >= self.max_steps
        self._done = answered or truncated
        info = self._info(valid=m is not None)
        if self._done:
            info["success"] = success
        return f"Question: {self.question}\n{result}", 1.0 if success else 0.0, answered, truncated, info


@register_env()
def search_qa(*, entities: int = 12, hops: int = 2, distractors: int = 8, max_steps: int = 0) -> SearchQA:
    """Multi-hop question answering with search[query] and answer[text] over a generated knowledge base.

    Args:
        entities: the number of entities of the world (countries, cities, people, companies),
            4·(hops + 1)..400.
        hops: the number of relations the question composes (difficulty knob), 1..6.
        distractors: the number of facts in the knowledge base besides the question's chain, >= 0.
        max_steps: the step limit, >= hops + 1; 0 = 2·(hops + 1).
    """
    if not 1 <= hops <= 6 or not 4 * (hops + 1) <= entities <= 400 or distractors < 0 or (0 < max_steps < hops + 1) or max_steps < 0:
        raise EnvError(
            f"environment 'search_qa': hops={hops} must be in 1..6, entities={entities} in 4·(hops+1)..400, "
            f"distractors={distractors} >= 0, max_steps={max_steps} 0 (= 2·(hops+1)) or >= hops + 1"
        )
    return SearchQA(entities, hops, distractors, max_steps or 2 * (hops + 1))
