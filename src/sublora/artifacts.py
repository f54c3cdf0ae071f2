"""Cached steps, their artifacts and the graph of artifacts a design needs: the machinery under
sublora.pipeline, which declares the four steps (teacher, dataset, student, eval) with it.

A `Step` is declared once: its kind, the version of its code, its late settings, its configuration, the
artifacts it reads and its build. Declaring it registers it in STEPS by kind, in declaration order (the
build order of the stages), so an `Artifact` — which carries only its kind, configuration, key, arguments
and what it reads, and so travels to another process — finds its step's build there too. A `Graph` makes
each artifact once (configuration and key), after the artifacts it reads.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .config import Profile

STEPS: dict = {}  # kind -> Step, in the order the steps were declared (sublora.pipeline): the build order


@dataclass(frozen=True)
class Step:
    """One cached step, declared once. Its artifact for the arguments `args` (after the profile) reads
    the artifacts reads(p, *args) names, as (step, args) (None: whoever asks for the artifact names
    them); its configuration is {"step": kind, "v": version, **config(p, reads, *args)}, less its late
    settings wherever they still hold the value every artifact built before they joined the key had
    (`late`, cache.without_late_defaults; in the part of the configuration named `late_in`, else at its
    top); build(p, artifact, directory, progress) fills its directory."""
    kind: str  # its folder in the cache
    version: int  # of its code: a new version gives every artifact of the step a new key
    late: dict
    config: Callable[..., dict]
    build: Callable[[Profile, Artifact, Path, bool], None]
    reads: Callable[..., list] | None = None
    late_in: str = ""
    keep: tuple[str, ...] = ()  # the files an artifact keeps when its bulky ones are dropped (Bundle)

    def __post_init__(self):
        STEPS[self.kind] = self

    def artifact(self, p: Profile, args: tuple, reads: tuple[Artifact, ...]) -> Artifact:
        config = {"step": self.kind, "v": self.version, **self.config(p, reads, *args)}
        if not self.late_in:
            config = cache.without_late_defaults(config, self.late)
        elif self.late_in in config:  # a channel dataset has no sampling settings of its own
            config[self.late_in] = cache.without_late_defaults(config[self.late_in], self.late)
        return Artifact(self.kind, config, cache.key(config), args, reads)


@dataclass
class Artifact:
    """One cached artifact: its step's kind, its configuration and key (computed once, by its Step),
    the arguments of its step after the profile, and the artifacts its build reads."""
    kind: str  # teacher | dataset | student | eval
    config: dict
    key: str
    args: tuple = ()
    reads: tuple[Artifact, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """The keys of the artifacts its build reads: an executor builds it after those."""
        return tuple(a.key for a in self.reads)

    @property
    def seed(self) -> int:
        """seed_of(config), off the key computed already."""
        return int(self.key[:8], 16)

    @property
    def location(self) -> Path:
        return cache.location(self.kind, self.config, self.key)

    def exists(self) -> bool:
        return cache.exists(self.kind, self.config, self.key)

    def build(self, p: Profile, progress: bool = False, whole: bool = False) -> Path:
        """Its directory; built first (reading, so building, what it reads) if the cache lacks it, or, with
        whole=True, if its bulky files were dropped after its readers were built (Bundle)."""
        return cache.get_or_build(self.kind, self.config, lambda d: STEPS[self.kind].build(p, self, d, progress),
                                  digest=self.key, whole=whole)


@dataclass
class Bundle:
    """One job for an executor: an artifact, whole, then the artifacts that read it, then its bulky files dropped
    (all but its step's `keep`; cache.drop): a large student is evaluated as soon as it is trained, and its
    weights go. It stands in the executor's list where the artifact would: its kind, key, inputs, configuration."""
    first: Artifact
    then: tuple[Artifact, ...]

    kind = property(lambda self: self.first.kind)
    key = property(lambda self: self.first.key)
    config = property(lambda self: self.first.config)
    inputs = property(lambda self: self.first.inputs)

    def build(self, p: Profile, progress: bool = False) -> Path:
        d = self.first.build(p, progress, whole=bool(self.then))
        for a in self.then:
            a.build(p, progress)
        cache.drop(self.kind, self.first.config, STEPS[self.kind].keep, digest=self.key)
        return d


class Graph(dict):
    """Artifacts by (kind, key), in build order (every artifact after its inputs), each made once."""

    def __init__(self, p: Profile):
        super().__init__()
        self.p = p
        self.made: dict[tuple, Artifact] = {}  # by (kind, args)

    def need(self, step: Step, *args, reads: tuple[Artifact, ...] | None = None) -> Artifact:
        """The artifact of `step` for `args`, added after the artifacts it reads (`reads`, else the step's)."""
        if (step.kind, args) not in self.made:
            if reads is None:
                reads = tuple(self.need(s, *a) for s, a in (step.reads(self.p, *args) if step.reads else ()))
            a = step.artifact(self.p, args, reads)
            self.made[step.kind, args] = self.setdefault((a.kind, a.key), a)
        return self.made[step.kind, args]


def artifact(p: Profile, step: Step, *args) -> Artifact:
    """One artifact of `step` for `args`, with those it reads: what the step functions build."""
    return Graph(p).need(step, *args)
