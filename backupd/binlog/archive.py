"""The one reader of the binlog archive: timelines, their files, ends and gaps.

An archive belongs to a cluster (`[storage] cluster`), not to one server. Every continuous
stream it receives is a timeline; each has an immutable history object naming its parent,
the branch point and why it began (see `backupd.binlog.timeline` for when one begins).
Resume, the compactor, `binlog fetch`, restore planning and retention all read the archive
through `Archive.read()`, so the key grammar and the "longest segment wins" walk live in
`layout` and here only.

Archives written before timelines (objects under `binlog/<server identity>/`) are adopted
as timeline 1 of the cluster by a history object with reason `migration` whose stream is
the legacy prefix: nothing is copied, and the old keys stay readable.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from backupd.binlog import layout
from backupd.config import StorageSection
from backupd.errors import ArchiveCorrupt, StorageError, UsageError
from backupd.storage import ObjectStore


def cluster_name(section: StorageSection) -> str:
    """`[storage] cluster`, or this host's short name made key-safe (the config's rule:
    letters, digits, '.', '_', '-', at most 63)."""
    if section.cluster:
        return section.cluster
    host = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9._-]", "-", host).strip("-._")[:63] or "default"


REASONS = ("start", "migration", "reset", "promotion", "failover", "rewind")


@dataclass(frozen=True)
class History:
    """A timeline's immutable record: where it came from and where its objects are."""

    timeline: int
    stream: str  # key home under binlog/ (`<cluster>/tl000002`, or a legacy server identity)
    reason: str
    identity: str  # the server identity that writes this timeline
    created_at: float
    parent: int | None = None
    # Crossing from the parent: replay the parent up to `parent_end` ("file:pos", a
    # transaction boundary), then this timeline from `child_start`. "" = not crossable:
    # the branch point is not known exactly, so no plan may cross it.
    parent_end: str = ""
    child_start: str = ""
    gtid: str = ""  # the server's GTID position when the timeline began
    why: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> History:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("history object is not a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        history = cls(**{k: v for k, v in data.items() if k in known})
        if history.reason not in REASONS or not history.stream:
            raise ValueError(f"history object has reason {history.reason!r}")
        return history

    @property
    def crossable(self) -> bool:
        return self.parent is not None and bool(self.parent_end) and bool(self.child_start)


@dataclass
class Timeline:
    """One timeline as listed: its history, segments (longest-first chains) and gaps."""

    history: History
    segments: list[layout.SegmentKey] = field(default_factory=list)
    gaps: list[layout.GapKey] = field(default_factory=list)
    indexes: list[layout.IndexKey] = field(default_factory=list)  # change index objects

    @property
    def id(self) -> int:
        return self.history.timeline

    @property
    def stream(self) -> str:
        return self.history.stream

    def files(self) -> dict[str, layout.FileChain]:
        chains = {}
        for name, parts in layout.group_by_file(self.segments).items():
            found = layout.chain(parts)
            if found is not None:
                chains[name] = found
        return chains

    def ordered_files(self) -> list[str]:
        return sorted({s.file for s in self.segments}, key=layout.file_order)

    def last_file(self) -> str:
        names = self.ordered_files()
        return names[-1] if names else ""

    def end(self) -> tuple[str, int, str]:
        """(file, end of its contiguous prefix, kind of the segment ending there)."""
        last = self.last_file()
        if not last:
            return "", 0, ""
        found = layout.chain(s for s in self.segments if s.file == last)
        if found is None or not found.segments:
            return last, 0, ""
        return last, found.end, found.segments[-1].kind

    def boundary(self) -> str:
        """The last archived transaction boundary ("file:pos"): where a child may branch."""
        for name in reversed(self.ordered_files()):
            found = layout.chain(s for s in self.segments if s.file == name)
            if found is None:
                continue
            for seg in reversed(found.segments):
                if seg.kind in ("tx", "eof") and seg.size > 0:
                    return f"{name}:{seg.end}"
        return ""

    def end_gtid(self) -> dict[int, int]:
        """Domain -> highest sequence number archived (MariaDB GTIDs in segment names)."""
        state: dict[int, int] = {}
        for seg in self.segments:
            for text in (seg.first_gtid, seg.last_gtid):
                parsed = parse_gtid(text)
                if parsed is not None:
                    domain, sequence = parsed
                    state[domain] = max(state.get(domain, -1), sequence)
        return state

    def last_time(self) -> int:
        return max((s.last_time for s in self.segments), default=0)

    def holes(self) -> list[Hole]:
        """Byte ranges missing inside the archived history (not after its end): a hole in a
        file, a file that stops without its ROTATE although later files exist, or a whole
        file missing between two archived ones. Recorded gaps (purged) are not holes."""
        names = self.ordered_files()
        found: list[Hole] = []
        purged = {g.from_file for g in self.gaps} | {g.to_file for g in self.gaps}
        for index, name in enumerate(names):
            chain = layout.chain(s for s in self.segments if s.file == name)
            if chain is None:
                continue
            found += [Hole(name, a, b, "bytes missing inside the file") for a, b in chain.holes]
            later = names[index + 1 :]
            if later and not chain.closed and not chain.holes and name not in purged:
                found.append(Hole(name, chain.end, None, "the file stops without its ROTATE"))
            if later:
                following = later[0]
                base, number = layout.file_order(name)
                next_base, next_number = layout.file_order(following)
                if base == next_base and next_number > number + 1 and name not in purged:
                    for missing in range(number + 1, next_number):
                        file = f"{base}.{missing:0{len(name) - len(base) - 1}d}"
                        found.append(Hole(file, 0, None, "the whole file is missing"))
        return found


@dataclass(frozen=True)
class Hole:
    """A range the archive should hold but does not: [start, end) of `file` (end None: to
    the end of the file)."""

    file: str
    start: int
    end: int | None
    why: str

    def __str__(self) -> str:
        return f"{self.file} bytes {self.start}..{self.end if self.end is not None else 'end'}"


def parse_gtid(text: str) -> tuple[int, int] | None:
    """ "domain-server-sequence" -> (domain, sequence); None for anything else."""
    parts = text.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[2])


def gtid_position(text: str) -> dict[int, int]:
    """A MariaDB GTID position ("0-1-10,1-2-7") as domain -> sequence."""
    state: dict[int, int] = {}
    for piece in text.split(","):
        parsed = parse_gtid(piece.strip())
        if parsed is not None:
            state[parsed[0]] = max(state.get(parsed[0], -1), parsed[1])
    return state


@dataclass
class ArchiveView:
    """The cluster's archive as one listing saw it."""

    cluster: str
    timelines: dict[int, Timeline]
    broken: list[str]  # history objects that could not be read: nothing may be deleted

    def latest(self) -> Timeline | None:
        return self.timelines[max(self.timelines)] if self.timelines else None

    def get(self, timeline: int) -> Timeline:
        try:
            return self.timelines[timeline]
        except KeyError:
            have = sorted(self.timelines)
            raise ArchiveCorrupt(
                f"no timeline {timeline} in cluster {self.cluster} (have {have})"
            ) from None

    def lineage(self, timeline: int) -> list[Timeline]:
        """`timeline` and its ancestors, oldest first."""
        path: list[Timeline] = []
        current: int | None = timeline
        while current is not None and current not in {t.id for t in path}:
            found = self.get(current)
            path.insert(0, found)
            current = found.history.parent
        return path

    def of_identity(self, identity: str, at: float) -> Timeline | None:
        """The timeline that server `identity` was writing at time `at` (for old snapshot
        records that name no timeline): the newest one it began before `at`."""
        mine = [
            t
            for t in self.timelines.values()
            if t.history.identity == identity and t.history.created_at <= at
        ]
        if not mine:
            mine = [t for t in self.timelines.values() if t.history.identity == identity]
            mine = [min(mine, key=lambda t: t.id)] if mine else []
        return max(mine, key=lambda t: t.id) if mine else None


class Archive:
    """Reads and extends one cluster's archive in the repository. Keep one per store: the
    immutable history objects are then fetched once, not at every read."""

    def __init__(self, store: ObjectStore, cluster: str) -> None:
        self.store = store
        self.cluster = cluster
        self._histories: dict[str, History] = {}

    def read(self) -> ArchiveView:
        """One LIST of the cluster (plus one per adopted legacy stream). A listing error
        raises StorageError: callers never act on a partial archive."""
        keys = [info.key for info in self.store.list(layout.cluster_prefix(self.cluster))]
        timelines, broken = self._timelines(keys)
        by_stream = {timeline.stream: timeline for timeline in timelines.values()}
        for legacy in {t.stream for t in timelines.values() if "/" not in t.stream}:
            keys += [info.key for info in self.store.list(layout.stream_prefix(legacy))]
        _assign(keys, by_stream)
        return ArchiveView(self.cluster, timelines, broken)

    def _timelines(self, keys: Iterable[str]) -> tuple[dict[int, Timeline], list[str]]:
        """The timelines whose history objects are among `keys`, and those unreadable."""
        timelines: dict[int, Timeline] = {}
        broken: list[str] = []
        for key in keys:
            if layout.parse_history(key) is None:
                continue
            try:
                history = self._histories.get(key) or History.from_json(self.store.get(key))
            except (ValueError, TypeError) as exc:
                broken.append(f"{key}: {exc}")
                continue
            except StorageError as exc:
                broken.append(f"{key}: {exc.message}")
                continue
            self._histories[key] = history
            timelines[history.timeline] = Timeline(history)
        return timelines, broken

    def timeline_of(self, identity: str, at: float) -> int:
        """The timeline `identity` was writing at time `at` (0: none), from the history
        objects alone (one small LIST)."""
        prefix = f"{layout.cluster_prefix(self.cluster)}{layout.TIMELINES}/"
        timelines, _broken = self._timelines(info.key for info in self.store.list(prefix))
        found = ArchiveView(self.cluster, timelines, []).of_identity(identity, at)
        return found.id if found else 0

    def begin(self, history: History) -> None:
        """Write a new timeline's history object; an existing one is never replaced."""
        key = layout.history_key(self.cluster, history.timeline)
        if any(info.key == key for info in self.store.list(key)):
            raise ArchiveCorrupt(f"timeline {history.timeline} exists already: {key}")
        self.store.put(key, history.to_json())

    def new_history(
        self, view: ArchiveView, reason: str, identity: str, **branch: str | int | None
    ) -> History:
        number = max(view.timelines, default=0) + 1
        return History(
            timeline=number,
            stream=layout.timeline_stream(self.cluster, number),
            reason=reason,
            identity=identity,
            created_at=round(time.time(), 3),
            **branch,  # type: ignore[arg-type]
        )


def _assign(keys: Iterable[str], by_stream: dict[str, Timeline]) -> None:
    for key in keys:
        seg = layout.parse_segment(key)
        if seg is not None and seg.stream in by_stream:
            by_stream[seg.stream].segments.append(seg)
            continue
        gap = layout.parse_gap(key)
        if gap is not None and gap.stream in by_stream:
            by_stream[gap.stream].gaps.append(gap)
            continue
        index = layout.parse_index(key)
        if index is not None and index.stream in by_stream:
            by_stream[index.stream].indexes.append(index)


def roots(store: ObjectStore) -> tuple[list[str], list[str]]:
    """(clusters with timelines, server identities with archives from before timelines),
    from one LIST of the repository's binlog root."""
    clustered, legacy = set(), set()
    for info in store.list(f"{layout.ROOT}/"):
        parsed = layout.parse_history(info.key)
        if parsed is not None:
            clustered.add(parsed[0])
            continue
        seg = layout.parse_segment(info.key)
        if seg is not None and "/" not in seg.stream:
            legacy.add(seg.stream)
    return sorted(clustered), sorted(legacy)


def legacy_streams(store: ObjectStore) -> list[str]:
    """Server identities that hold archives written before timelines."""
    return roots(store)[1]


def clusters(store: ObjectStore) -> list[str]:
    """Clusters with timelines in the repository."""
    return roots(store)[0]


@dataclass(frozen=True)
class Selected:
    """One timeline's stream picked for reading (fetch, restore, verify)."""

    stream: str
    identity: str  # the server identity that wrote it
    cluster: str = ""  # "" for a legacy archive not adopted by any cluster yet
    timeline: Timeline | None = None
    view: ArchiveView | None = None


def select(
    store: ObjectStore, cluster: str = "", timeline: int | None = None, server: str | None = None
) -> Selected:
    """The timeline to read: `timeline` of `cluster` (default: the only cluster, its latest
    timeline); a repository without timelines is read by server identity as before."""
    known, legacy = roots(store)
    if server and not cluster and server in legacy:
        return Selected(server, server)
    if cluster or known:
        if not cluster:
            if len(known) != 1:
                raise UsageError(f"choose a cluster with --cluster (archives for: {known})")
            cluster = known[0]
        view = Archive(store, cluster).read()
        chosen = view.get(timeline) if timeline else view.latest()
        if chosen is None:
            raise UsageError(f"no binlog archive for cluster {cluster!r} (have: {known or 'none'})")
        return Selected(chosen.stream, chosen.history.identity, cluster, chosen, view)
    if server:
        if server not in legacy:
            raise UsageError(f"no binlog archive for server {server!r} (have: {legacy or 'none'})")
        return Selected(server, server)
    if len(legacy) != 1:
        raise UsageError(f"choose a server with --server (archives for: {legacy or 'none'})")
    return Selected(legacy[0], legacy[0])
