"""The revision graph: heads, bases, labels, target resolution and upgrade/downgrade plans.

Pure data and algorithms — no I/O, no boto3, no files. ``scripts.py`` loads the revision
files into :class:`Revision` objects; the runner asks this module *what* to apply and in
which order, and records each step's ``heads_after`` in the table.

Vocabulary (as in Alembic):

- ``down_revision`` edges are *structural*: they decide heads, bases, branch points, merges.
- ``depends_on`` edges only order and close: a depended-on revision is applied first, but it
  stays the head of its own branch.
- A *state* is a set of heads; the applied set is its :meth:`RevisionGraph.closure`. The
  empty tuple is ``base`` (nothing applied).
- A downgrade to a target removes what is above it on a ``down_revision`` line, and what
  depends on something removed; nothing else (Alembic's rule). A ``NAME@`` target
  (:class:`Target` with a branch) limits those lines to one branch.

Every ordering is deterministic: revisions get a fixed position from one topological sort
(oldest first, finishing a line of revisions before starting a sibling, ties by id), and
all plans, heads and listings follow it.
"""
from __future__ import annotations

import heapq
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import GraphError, MultipleHeads, ScriptError, UnknownRevision

MIN_PREFIX = 4
RESERVED = frozenset({"head", "heads", "base", "current"})
_RELATIVE = re.compile(r"([+-])(\d+)")
_REV_RELATIVE = re.compile(r"(.+?)([+-])(\d+)")
_BAD_ID_CHARS = re.compile(r"[\s@,:]")


def _as_tuple(value) -> tuple[str, ...]:
    """None/str/iterable -> tuple of non-empty strings (so ``down_revision="a"`` works)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    return tuple(v for v in value if v)


@dataclass(frozen=True)
class Revision:
    """One revision file, as far as the graph cares."""

    revision: str
    down_revision: tuple[str, ...] = ()  # () for a base; 2+ for a merge
    branch_labels: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    doc: str = ""  # first line of the docstring (the message)
    path: str = ""  # the file it came from, for error messages only

    def __post_init__(self):
        for name in ("down_revision", "branch_labels", "depends_on"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))

    @property
    def where(self) -> str:
        """``'abc' (versions/abc.py)`` — how errors name this revision."""
        return f"'{self.revision}' ({self.path})" if self.path else f"'{self.revision}'"


@dataclass(frozen=True)
class Step:
    """Apply (``up``) or revert (``down``) one revision; the heads around it are what the
    table records before and after the step."""

    revision: Revision
    direction: str  # "up" | "down"
    heads_before: tuple[str, ...]
    heads_after: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """A resolved target: the revisions it names (``()`` is base) and, for a ``NAME@...``
    target, the branch as written (a label or a revision id), which limits a downgrade or a
    stamp to that branch."""

    revisions: tuple[str, ...]
    branch: str | None = None


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(ids)


class RevisionGraph:
    """An immutable, validated DAG of revisions."""

    def __init__(self, revisions: Iterable[Revision]):
        revs: dict[str, Revision] = {}
        for rev in revisions:
            rid = rev.revision
            if not isinstance(rid, str) or not rid:
                raise ScriptError(
                    f"revision in {rev.path or '?'} has an empty revision id: set `revision` to a unique id"
                )
            if rid in revs:
                raise ScriptError(
                    f"duplicate revision id '{rid}' in {revs[rid].path or '?'} and {rev.path or '?'}:"
                    " give one of them a new id"
                )
            if rid in RESERVED or _BAD_ID_CHARS.search(rid) or rid[0] in "+-":
                raise ScriptError(
                    f"revision id '{rid}' in {rev.path or '?'} is not usable (reserved word, or starts with"
                    " +/-, or contains whitespace, '@', ',' or ':'): rename it"
                )
            revs[rid] = rev

        self._labels: dict[str, str] = {}
        for rev in revs.values():
            for label in rev.branch_labels:
                if label in self._labels:
                    other = revs[self._labels[label]]
                    raise GraphError(
                        f"branch label '{label}' is used by both {other.where} and {rev.where}:"
                        " labels must be unique"
                    )
                if label in revs or label in RESERVED or _BAD_ID_CHARS.search(label) or label[0] in "+-":
                    raise GraphError(
                        f"branch label '{label}' of {rev.where} clashes with a revision id or a reserved"
                        " word, or contains whitespace, '@', ',' or ':': rename the label"
                    )
                self._labels[label] = rev.revision

        # parents: structural (down_revision); deps: down_revision + depends_on (ordering)
        self._parents: dict[str, tuple[str, ...]] = {}
        self._deps: dict[str, tuple[str, ...]] = {}
        for rid, rev in revs.items():
            for p in rev.down_revision:
                if p not in revs:
                    raise GraphError(
                        f"revision {rev.where} has down_revision '{p}', which does not exist:"
                        " fix its down_revision or restore the missing revision file"
                    )
            deps = []
            for d in rev.depends_on:
                if d in revs:
                    deps.append(d)
                elif d in self._labels:  # Alembic allows a branch label in depends_on
                    deps.append(self._labels[d])
                else:
                    raise GraphError(
                        f"revision {rev.where} has depends_on '{d}', which does not exist:"
                        " fix its depends_on or restore the missing revision file"
                    )
            self._parents[rid] = tuple(dict.fromkeys(rev.down_revision))
            self._deps[rid] = tuple(dict.fromkeys(self._parents[rid] + tuple(deps)))

        self._children: dict[str, list[str]] = {r: [] for r in revs}
        self._dependents: dict[str, list[str]] = {r: [] for r in revs}
        for rid in revs:
            for p in self._parents[rid]:
                self._children[p].append(rid)
            for d in self._deps[rid]:
                self._dependents[d].append(rid)

        order = self._toposort(revs)
        self._pos: dict[str, int] = {r: i for i, r in enumerate(order)}
        for lst in (*self._children.values(), *self._dependents.values()):
            lst.sort(key=self._pos.__getitem__)
        self.revisions: dict[str, Revision] = {r: revs[r] for r in order}
        self._sorted_ids = sorted(revs)
        self._heads = tuple(r for r in order if not self._children[r])
        self._bases = tuple(r for r in order if not self._parents[r])

    # -- construction helpers -------------------------------------------------------------

    def _toposort(self, revs: dict[str, Revision]) -> list[str]:
        """Kahn's algorithm over down_revision + depends_on. Among ready revisions, prefer a
        child of the one just placed (so a line of revisions stays together), then the
        shallowest, then the smallest id."""
        indeg = {r: len(self._deps[r]) for r in revs}
        depth: dict[str, int] = {}
        ready: list[tuple[int, str]] = []
        for r in revs:
            if not indeg[r]:
                depth[r] = 0
                heapq.heappush(ready, (0, r))
        order: list[str] = []
        done: set[str] = set()
        preferred: tuple[int, str] | None = None
        while preferred or ready:
            if preferred:
                _, r = preferred
            else:
                _, r = heapq.heappop(ready)
                if r in done:
                    continue
            done.add(r)
            order.append(r)
            preferred = None
            for c in self._dependents[r]:
                indeg[c] -= 1
                if not indeg[c]:
                    depth[c] = 1 + max(depth[d] for d in self._deps[c])
                    item = (depth[c], c)
                    heapq.heappush(ready, item)
                    if r in self._parents[c] and (preferred is None or item < preferred):
                        preferred = item
        if len(order) < len(revs):
            raise GraphError(self._cycle_message(set(revs) - done))
        return order

    def _cycle_message(self, remaining: set[str]) -> str:
        # Every revision left over has a left-over dependency: walk them until one repeats.
        node = min(remaining)
        seen: dict[str, int] = {}
        path: list[str] = []
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = min(d for d in self._deps[node] if d in remaining)
        cycle = path[seen[node]:][::-1]  # oldest first: each is a parent of the next
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        chain = " -> ".join(cycle + [cycle[0]])
        return (
            f"cycle in the revision graph: {chain} (each is the down_revision or depends_on of the next):"
            " break it by editing down_revision/depends_on in one of these files"
        )

    # -- basic queries ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.revisions)

    def __contains__(self, rev_id: object) -> bool:
        return rev_id in self.revisions

    def get(self, rev_id: str) -> Revision:
        try:
            return self.revisions[rev_id]
        except KeyError:
            msg = f"unknown revision '{rev_id}': run `dyn history` to list revisions"
            raise UnknownRevision(msg) from None

    @property
    def heads(self) -> tuple[str, ...]:
        """Revisions that are nobody's down_revision, oldest first."""
        return self._heads

    @property
    def bases(self) -> tuple[str, ...]:
        return self._bases

    @property
    def branch_points(self) -> tuple[str, ...]:
        return tuple(r for r in self.revisions if len(self._children[r]) >= 2)

    @property
    def merge_points(self) -> tuple[str, ...]:
        return tuple(r for r in self.revisions if len(self._parents[r]) >= 2)

    @property
    def branch_labels(self) -> dict[str, str]:
        """label -> the revision that declares it."""
        return dict(self._labels)

    def children(self, rev_id: str) -> tuple[str, ...]:
        """Revisions whose down_revision includes ``rev_id``."""
        self.get(rev_id)
        return tuple(self._children[rev_id])

    def is_head(self, rev_id: str) -> bool:
        return rev_id in self.revisions and not self._children[rev_id]

    def is_branch_point(self, rev_id: str) -> bool:
        return rev_id in self.revisions and len(self._children[rev_id]) >= 2

    def is_merge_point(self, rev_id: str) -> bool:
        return rev_id in self.revisions and len(self._parents[rev_id]) >= 2

    def _sorted(self, ids: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(ids, key=self._pos.__getitem__))

    def _walk(self, starts: Iterable[str], edges: dict, include_self: bool) -> set[str]:
        starts = list(starts)
        for s in starts:
            self.get(s)
        seen = set(starts)
        stack = list(starts)
        while stack:
            for n in edges[stack.pop()]:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        if not include_self:
            seen.difference_update(starts)
        return seen

    def ancestors(self, rev: str, include_self: bool = True) -> set[str]:
        """Everything ``rev`` needs, via down_revision and depends_on."""
        return self._walk([rev], self._deps, include_self)

    def line_below(self, rev: str) -> set[str]:
        """The revisions below ``rev`` on its ``down_revision`` lines (``depends_on`` left out:
        a dependency sits on a branch of its own)."""
        return self._walk([rev], self._parents, False)

    def descendants(self, rev: str, include_self: bool = True) -> set[str]:
        """Everything that needs ``rev``, via down_revision and depends_on."""
        return self._walk([rev], self._dependents, include_self)

    def closure(self, heads: Iterable[str]) -> set[str]:
        """Every revision applied when these are the heads (() -> nothing)."""
        return self._walk(heads, self._deps, True)

    def heads_of(self, applied: Iterable[str]) -> tuple[str, ...]:
        """Structural heads of an applied set: members with no applied child."""
        applied = set(applied)
        return self._sorted(r for r in applied if not any(c in applied for c in self._children[r]))

    def check_known(self, heads: Iterable[str], where: str = "the table") -> None:
        unknown = [h for h in heads if h not in self.revisions]
        # `dyn stamp REV` replaces the recorded heads, whatever they are (see Runner.stamp)
        fix = ("or record the revision the table is really at with `dyn stamp REV` (a revision "
               "`dyn history` lists, or base)")
        if len(unknown) == 1:
            raise GraphError(
                f"{where} records revision '{unknown[0]}', which is not in the versions directory:"
                f" restore its file, {fix}"
            )
        if unknown:
            names = ", ".join(f"'{u}'" for u in unknown)
            raise GraphError(
                f"{where} records revisions {names}, which are not in the versions directory:"
                f" restore their files, {fix}"
            )

    def unknown(self, heads: Iterable[str]) -> tuple[str, ...]:
        """The revisions of ``heads`` that are not in the versions directory."""
        return tuple(h for h in heads if h not in self.revisions)

    # -- identifiers and targets -----------------------------------------------------------

    def _prefix_matches(self, ident: str, limit: int = 6) -> list[str]:
        i = bisect_left(self._sorted_ids, ident)
        matches = []
        while i < len(self._sorted_ids) and self._sorted_ids[i].startswith(ident) and len(matches) < limit:
            matches.append(self._sorted_ids[i])
            i += 1
        return matches

    def resolve_id(self, ident: str) -> str:
        """A full revision id, or a unique prefix of at least 4 characters."""
        if ident in self.revisions:
            return ident
        matches = self._prefix_matches(ident) if ident else []
        if len(matches) == 1 and len(ident) >= MIN_PREFIX:
            return matches[0]
        if len(matches) > 1 and len(ident) >= MIN_PREFIX:
            shown = _ids(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UnknownRevision(f"ambiguous revision '{ident}' matches {shown}: give more characters")
        hint = f" (a prefix needs at least {MIN_PREFIX} characters)" if matches else ""
        raise UnknownRevision(f"unknown revision '{ident}'{hint}: run `dyn history` to list revisions")

    def _lookup(self, ident: str) -> str | None:
        """Like :meth:`resolve_id`, but None when nothing starts with ``ident`` (so the caller
        can try another reading); an ambiguous or too short prefix is still an error."""
        if ident in self.revisions:
            return ident
        if not ident or not self._prefix_matches(ident, 1):
            return None
        return self.resolve_id(ident)

    def _name(self, rev: str) -> str:
        """How advice names the branch starting at ``rev``: its own label if it declares one
        (``label@...`` then means exactly ``rev@...``), else its id."""
        labels = self.revisions[rev].branch_labels
        return labels[0] if labels else rev

    def _single_head(self) -> tuple[str, ...]:
        if len(self._heads) > 1:
            raise MultipleHeads(
                f"multiple heads ({_ids(self._heads)}): use `heads`, `label@head` or a revision id,"
                " or join them with `dyn merge`"
            )
        return self._heads

    def _current(self, current: Sequence[str]) -> tuple[str, ...]:
        self.check_known(current)
        return self.heads_of(self.closure(current))

    @staticmethod
    def is_relative(target: str) -> bool:
        """Whether ``target`` means something only against the table's current heads
        (``current``, ``+N``, ``-N``, ``label@+N``, ``label@-N``)."""
        where = target.strip().rpartition("@")[2]
        return where == "current" or bool(_RELATIVE.fullmatch(where))

    def resolve(self, target: str, current: Sequence[str] = ()) -> tuple[str, ...]:
        """The revisions a target names; () is base. ``current`` is the table's heads,
        needed for relative targets (+N, -N, label@+N, label@-N, current)."""
        return self.resolve_target(target, current).revisions

    def resolve_target(self, target: str, current: Sequence[str] = ()) -> Target:
        """Parse and resolve a target. The grammar:

        ``head``, ``heads``, ``base``, ``current``, ``+N``/``-N`` (from the current heads),
        a revision id or a unique prefix, ``REV+N``/``REV-N``, ``head-N``, ``base+N``, a bare
        branch label (= ``label@head``), and ``NAME@WHERE`` where NAME is a label or a revision
        and WHERE is ``head``, ``heads``, ``base``, ``+N``/``-N`` (from the branch's applied
        tip), ``head-N``, ``base+N``, ``REV`` or ``REV±N`` (a revision of that branch).
        A ``NAME@`` target carries the branch, so a downgrade to it takes only that branch
        down (see :meth:`downgrade_plan`)."""
        target = target.strip()
        if "@" in target:
            name, _, where = target.partition("@")
            return Target(self._resolve_branch(name, where, target, current), name)
        return Target(self._resolve_plain(target, current))

    def _resolve_plain(self, target: str, current: Sequence[str]) -> tuple[str, ...]:
        if target == "heads":
            return self._heads
        if target == "head":
            return self._single_head()
        if target == "base":
            return ()
        if target == "current":
            return self._current(current)
        m = _RELATIVE.fullmatch(target)
        if m:
            return self._relative_to_current(target, m.group(1), int(m.group(2)), current)
        if target in self.revisions:
            return (target,)
        if target in self._labels:
            return self._branch_head(target, self._labels[target])
        try:
            return (self.resolve_id(target),)
        except UnknownRevision as err:
            m = _REV_RELATIVE.fullmatch(target)
            if not m:
                raise
            sym, sign, n = m.group(1), m.group(2), int(m.group(3))
            if sym == "base":
                if sign == "-":
                    raise GraphError(f"cannot go {target}: nothing is below base") from None
                return self._walk_up(None, n, target)
            if sym == "head" and self._heads:
                start = self._single_head()[0]
            else:
                try:
                    start = self.resolve_id(sym)
                except UnknownRevision:
                    raise err from None
            if sign == "+":
                return self._walk_up(start, n, target)
            return self._walk_down((start,), n, start, target)

    def _relative_to_current(self, target: str, sign: str, n: int, current: Sequence[str]) -> tuple[str, ...]:
        cur = self._current(current)
        if len(cur) > 1:
            raise GraphError(
                f"cannot go {target} from several heads ({_ids(cur)}): name the branch, e.g. "
                + " or ".join(f"`{self._name(h)}@{target}`" for h in cur)
            )
        if sign == "+":
            return self._walk_up(cur[0] if cur else None, n, target)
        if not cur:
            if n == 0:
                return ()
            raise GraphError(f"cannot go {target}: nothing is applied (the table is at base)")
        return self._walk_down(cur, n, cur[0], target)

    def _walk_up(
        self, start: str | None, n: int, target: str, within: set[str] | None = None
    ) -> tuple[str, ...]:
        """``n`` steps up the children from ``start`` (None = from base), staying ``within``
        a branch's lineage when given; a fork on the way is an error naming both ways."""
        shown = start or "base"
        pos = start
        for i in range(n):
            nxt = self._children[pos] if pos is not None else list(self._bases)
            if within is not None:
                nxt = [c for c in nxt if c in within]
            if not nxt:
                above = "nothing above it" if i == 0 else f"only {i} revision{'s' * (i > 1)} above it"
                raise GraphError(f"cannot go {target} from '{shown}': {above}")
            if len(nxt) > 1:
                where = f"'{pos}' is a branch point" if pos else "there are several bases"
                rest = target.rpartition("@")[2]
                raise GraphError(
                    f"cannot go {target} from '{shown}': {where} ({_ids(nxt)}): name the branch, e.g. "
                    + " or ".join(f"`{self._name(c)}@{rest}`" for c in nxt)
                )
            pos = nxt[0]
        return (pos,) if pos is not None else ()

    def _layer_below(self, heads: Sequence[str]) -> tuple[str, ...]:
        """The heads once ``heads`` themselves are removed (structural ancestors only)."""
        if len(heads) == 1 and len(self._parents[heads[0]]) <= 1:
            return self._parents[heads[0]]
        below = self._walk(heads, self._parents, include_self=False) - set(heads)
        return self.heads_of(below)

    def _walk_down(self, start: Sequence[str], n: int, shown: str, target: str) -> tuple[str, ...]:
        pos = tuple(start)
        for i in range(n):
            if not pos:
                below = "nothing below it" if i == 1 else f"only {i - 1} revision{'s' * (i > 2)} below it"
                raise GraphError(f"cannot go {target} from '{shown}': {below} (-{i} is base)")
            pos = self._layer_below(pos)
        return pos

    # -- branches (NAME@...) ---------------------------------------------------------------

    def _branch_root(self, name: str) -> str:
        if name in self._labels:
            return self._labels[name]
        try:
            return self.resolve_id(name)
        except UnknownRevision:
            # `dyn history` shows each label next to its revision (`dyn branches` shows forks only)
            if self._labels:
                known = f" (labels: {_ids(sorted(self._labels))})"
                where = "`dyn history` lists the revisions with their labels"
            else:
                known = " (no revision declares a branch label)"
                where = "name a revision instead; `dyn history` lists them"
            raise UnknownRevision(f"unknown branch label or revision '{name}'{known}: {where}") from None

    def _branch_members(self, root: str) -> tuple[set[str], str]:
        """A branch is its named revision, all its descendants, and its ancestors down to the
        previous branch point or merge (as in Alembic). Returns (members, lowest member)."""
        members = self._walk([root], self._children, True)
        node = root
        while len(self._parents[node]) == 1:
            p = self._parents[node][0]
            if len(self._children[p]) > 1 or len(self._parents[p]) > 1:
                break
            members.add(p)
            node = p
        return members, node

    def _lineage(self, root: str) -> set[str]:
        """The members of ``root``'s branch and everything structurally below it: where a
        ``NAME@`` walk may go, and which revisions a ``NAME@REV`` may name."""
        members, _ = self._branch_members(root)
        return members | self._walk([root], self._parents, True)

    def _branch_heads(self, root: str) -> tuple[str, ...]:
        return self._sorted(h for h in self._walk([root], self._children, True) if not self._children[h])

    def _branch_head(self, name: str, root: str) -> tuple[str, ...]:
        heads = self._branch_heads(root)
        if len(heads) > 1:
            raise MultipleHeads(
                f"branch '{name}' has multiple heads ({_ids(heads)}): use `{name}@heads` or a revision id,"
                " or join them with `dyn merge`"
            )
        return heads

    def _on_branch(self, rev: str, name: str, lineage: set[str]) -> str:
        if rev not in lineage:
            raise GraphError(
                f"revision '{rev}' is not on branch '{name}': run `dyn history -r {name}@base:heads`"
                " to list that branch"
            )
        return rev

    def _resolve_branch(self, name: str, where: str, target: str, current: Sequence[str]) -> tuple[str, ...]:
        root = self._branch_root(name)
        if where == "head":
            return self._branch_head(name, root)
        if where == "heads":
            return self._branch_heads(root)
        members, lowest = self._branch_members(root)
        if where == "base":
            # the layer below the branch (a merge's parents, less any below another one)
            return self._layer_below((lowest,))
        lineage = self._lineage(root)
        m = _RELATIVE.fullmatch(where)
        if m:
            return self._branch_relative(name, where, target, current, members, lineage)
        rev = self._lookup(where)
        if rev is not None:
            return (self._on_branch(rev, name, lineage),)
        m = _REV_RELATIVE.fullmatch(where)
        if not m:
            raise GraphError(
                f"cannot read target '{target}': after '@' use head, heads, base, +N, -N, head-N,"
                " base+N or a revision of the branch"
            )
        sym, sign, n = m.group(1), m.group(2), int(m.group(3))
        if sym == "base":
            if sign == "-":
                raise GraphError(f"cannot go {target}: nothing is below base")
            return self._walk_up(None, n, target, within=lineage)
        if sym == "head":
            start = self._branch_head(name, root)[0]
        else:
            start = self._lookup(sym)
            if start is None:
                raise UnknownRevision(f"unknown revision '{sym}' in '{target}': run `dyn history` to list revisions")
            self._on_branch(start, name, lineage)
        if sign == "+":
            return self._walk_up(start, n, target, within=lineage)
        return self._walk_down((start,), n, start, target)

    def _branch_relative(
        self, name: str, where: str, target: str, current: Sequence[str], members: set[str], lineage: set[str]
    ) -> tuple[str, ...]:
        """``NAME@+N`` / ``NAME@-N``: from the branch's applied tip (the highest applied revision
        of its lineage; nothing applied on it = from base)."""
        applied = self.closure(self._current(current))
        tips = self.heads_of(applied & lineage)
        if len(tips) > 1:
            raise GraphError(
                f"cannot go {target}: branch '{name}' has several applied heads ({_ids(tips)}): name one, e.g. "
                + " or ".join(f"`{self._name(t)}@{where}`" for t in tips)
            )
        n = int(where[1:])
        if where[0] == "+":
            return self._walk_up(tips[0] if tips else None, n, target, within=lineage)
        if not set(tips) & members:
            raise GraphError(f"cannot go {target}: no revision of branch '{name}' is applied")
        return self._walk_down(tips, n, tips[0], target)

    # -- plans -----------------------------------------------------------------------------

    def _removal(self, applied: set[str], target: Sequence[str], lineage: set[str] | None) -> tuple[set[str], set[str]]:
        """What a downgrade to ``target`` removes, as in Alembic: the revisions above a target
        member on a down_revision line (the lines starting at its children; at base, every
        line), and whatever depends on a removed one; never what the target itself needs.
        ``lineage`` limits the lines to one branch. Returns (removed, removed structurally)."""
        if target:
            roots = {c for t in target for c in self._children[t]}
        else:
            roots = set(self._bases)
        if lineage is not None:
            roots &= lineage
        keep = self.closure(target)
        removed = (self._walk(roots, self._dependents, True) & applied) - keep
        lines = (self._walk(roots, self._children, True) & applied) - keep
        return removed, lines

    def _branch_removal(self, applied: set[str], target: Sequence[str], branch: str) -> set[str]:
        """The removal of a ``NAME@`` downgrade, refused when it would take a line of another
        branch down (a target below the branch's own base). Revisions of other branches that
        *depend on* the removed ones go too: they cannot stay without them."""
        root = self._branch_root(branch)
        members, lowest = self._branch_members(root)
        removed, lines = self._removal(applied, target, self._lineage(root))
        outside = lines - members
        if outside:
            floor = self._layer_below((lowest,))
            start = f"above {_ids(floor)}" if floor else "at base"
            to = _ids(target) if target else "base"
            plain = f"; `dyn downgrade {to}` takes every branch down to {to}" if len(target) <= 1 else ""
            raise GraphError(
                f"branch '{branch}' starts {start}: going to {to} would also remove"
                f" {_ids(self._sorted(outside))}, which are not on it; use `{branch}@base` to take"
                f" the branch down{plain}"
            )
        return removed

    def upgrade_plan(self, current: Sequence[str], target: Sequence[str]) -> list[Step]:
        """Steps that take the table from ``current`` heads to include ``target``, parents and
        dependencies first. Already there -> []."""
        applied = self.closure(self._current(current))
        needed = self.closure([self.get(t).revision for t in target]) - applied
        heads = set(self.heads_of(applied))
        steps = []
        for r in sorted(needed, key=self._pos.__getitem__):
            before = self._sorted(heads)
            heads.difference_update(self._parents[r])
            heads.add(r)
            steps.append(Step(self.revisions[r], "up", before, self._sorted(heads)))
        return steps

    def _check_downgrade_target(self, cur: tuple[str, ...], applied: set[str], target: tuple[str, ...]) -> None:
        if target and not applied:
            raise GraphError(f"nothing to downgrade: the table is at base (target: {_ids(target)})")
        for t in target:
            if t not in applied:
                raise GraphError(
                    f"cannot downgrade to '{t}': it is not applied (current: {_ids(cur)});"
                    f" run `dyn upgrade {t}` to go up"
                )

    def downgrade_plan(
        self, current: Sequence[str], target: Sequence[str], *, branch: str | None = None
    ) -> list[Step]:
        """Steps that take the table from ``current`` down to ``target``, children first.
        ``()`` removes everything; otherwise a revision is removed only if it is above a target
        member on a down_revision line, or depends on a removed one: other branches, and
        revisions that merely depend on the target, stay. With ``branch`` (a ``NAME@`` target)
        only that branch's lines are taken down."""
        cur = self._current(current)
        applied = self.closure(cur)
        target = tuple(self.get(t).revision for t in target)
        self._check_downgrade_target(cur, applied, target)
        if branch is None:
            remove, _ = self._removal(applied, target, None)
        else:
            remove = self._branch_removal(applied, target, branch)
        heads = set(cur)
        steps = []
        for r in sorted(remove, key=self._pos.__getitem__, reverse=True):
            before = self._sorted(heads)
            heads.discard(r)
            applied.discard(r)
            for p in self._parents[r]:
                if not any(c in applied for c in self._children[p]):
                    heads.add(p)
            steps.append(Step(self.revisions[r], "down", before, self._sorted(heads)))
        return steps

    def stamp_heads(self, current: Sequence[str], target: Sequence[str], *, branch: str | None = None) -> tuple[str, ...]:
        """The heads ``dyn stamp`` records. A plain target is the new state as it stands; a
        ``NAME@`` target moves only that branch (as in Alembic): down by the same removal a
        downgrade would make, or up by adding the target, and other branches keep their heads."""
        target = tuple(self.get(t).revision for t in target)
        if branch is None:
            return target
        applied = self.closure(self._current(current))
        if all(t in applied for t in target):
            return self.heads_of(applied - self._branch_removal(applied, target, branch))
        return self.heads_of(applied | self.closure(target))

    # -- listing ---------------------------------------------------------------------------

    def history(
        self, start: str | None = None, end: str | None = None, current: Sequence[str] = ()
    ) -> list[Revision]:
        """Revisions newest first; ``start``/``end`` bound the range ``start:end`` inclusive
        (descendants of start that are ancestors of end). Either may be None. A ``NAME@`` bound
        keeps the listing to that branch's line; relative bounds count from ``current``. An
        inverted range (end below start), or one with nothing between, is an error."""
        keep: set[str] | None = None
        s: tuple[str, ...] = ()
        e: tuple[str, ...] | None = None
        if start:
            t = self.resolve_target(start, current)
            s = t.revisions
            keep = self._walk(s, self._dependents, True) if s else set(self.revisions)
            if t.branch:
                keep &= self._lineage(self._branch_root(t.branch))
        if end:
            t = self.resolve_target(end, current)
            e = t.revisions
            anc = self.closure(e)
            if t.branch:
                anc &= self._lineage(self._branch_root(t.branch))
            keep = anc if keep is None else keep & anc
        if s and e is not None and not keep:
            rng = f"{start}:{end}"
            if not e or any(x in self.closure(s) for x in e):
                raise GraphError(
                    f"history range '{rng}' is inverted: {end} is below {start}; put the older one"
                    f" first: `dyn history -r {end}:{start}`"
                )
            raise GraphError(
                f"history range '{rng}' is empty: {end} is not above {start} (they are on different"
                " branches): run `dyn history` to see every revision"
            )
        ids = reversed(list(self.revisions))
        return [self.revisions[r] for r in ids if keep is None or r in keep]
