"""Property tests for dynamic.graph on random DAGs (hypothesis)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamic.graph import Revision, RevisionGraph

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw, max_size: int = 18, deps: bool = True):
    """Each new revision picks 0-2 parents among earlier ones (0 mostly for the first), and
    sometimes a depends_on. Names are shuffled so id order is unrelated to creation order."""
    n = draw(st.integers(1, max_size))
    names = draw(st.permutations([f"r{i:02d}" for i in range(n)]))
    revs = []
    for i in range(n):
        if i == 0:
            k = 0
        else:
            k = min(i, draw(st.sampled_from([0, 1, 1, 1, 1, 2, 2])))
        parents = draw(st.lists(st.integers(0, i - 1), min_size=k, max_size=k, unique=True)) if i and k else []
        dep = []
        if deps and i and draw(st.integers(0, 4)) == 0:
            dep = [draw(st.integers(0, i - 1))]
        revs.append(Revision(names[i], tuple(names[p] for p in parents), (), tuple(names[d] for d in dep)))
    order = draw(st.permutations(range(n)))
    return [revs[i] for i in order]


@st.composite
def graph_and_states(draw, deps: bool = True):
    revs = draw(dags(deps=deps))
    G = RevisionGraph(revs)
    ids = sorted(G.revisions)
    cur = G.heads_of(G.closure(draw(st.lists(st.sampled_from(ids), max_size=4))))
    tgt = G.heads_of(G.closure(draw(st.lists(st.sampled_from(ids), max_size=4))))
    return G, cur, tgt


def deps_of(G: RevisionGraph, r: str) -> set[str]:
    rev = G.get(r)
    return set(rev.down_revision) | set(rev.depends_on)


def check_up(G: RevisionGraph, applied: set[str], steps) -> set[str]:
    applied = set(applied)
    heads = G.heads_of(applied)
    for s in steps:
        r = s.revision.revision
        assert s.direction == "up"
        assert r not in applied
        assert deps_of(G, r) <= applied  # parents and dependencies first
        assert s.heads_before == heads
        applied.add(r)
        heads = G.heads_of(applied)
        assert s.heads_after == heads
    return applied


def check_down(G: RevisionGraph, applied: set[str], steps) -> set[str]:
    applied = set(applied)
    heads = G.heads_of(applied)
    for s in steps:
        r = s.revision.revision
        assert s.direction == "down"
        assert r in applied
        applied.discard(r)
        assert not any(r in deps_of(G, x) for x in applied)  # children first
        assert s.heads_before == heads
        heads = G.heads_of(applied)
        assert s.heads_after == heads
    return applied


@SETTINGS
@given(dags())
def test_full_upgrade_is_a_topological_order_of_everything(revs):
    G = RevisionGraph(revs)
    steps = G.upgrade_plan((), G.resolve("heads"))
    names = [s.revision.revision for s in steps]
    assert sorted(names) == sorted(G.revisions)
    assert check_up(G, set(), steps) == set(G.revisions)
    assert steps[-1].heads_after == G.heads
    assert list(G.revisions) == names  # the graph's own order is the same order
    assert [r.revision for r in G.history()] == names[::-1]


@SETTINGS
@given(dags(), st.randoms(use_true_random=False))
def test_input_order_never_matters(revs, rnd):
    shuffled = revs[:]
    rnd.shuffle(shuffled)
    a, b = RevisionGraph(revs), RevisionGraph(shuffled)
    assert list(a.revisions) == list(b.revisions)
    assert a.heads == b.heads and a.bases == b.bases
    assert a.branch_points == b.branch_points and a.merge_points == b.merge_points


@SETTINGS
@given(dags())
def test_structure_matches_definitions(revs):
    G = RevisionGraph(revs)
    parents = {r: set(G.get(r).down_revision) for r in G.revisions}
    children = {r: {c for c in G.revisions if r in parents[c]} for r in G.revisions}
    assert set(G.heads) == {r for r in G.revisions if not children[r]}
    assert set(G.bases) == {r for r in G.revisions if not parents[r]}
    assert set(G.branch_points) == {r for r in G.revisions if len(children[r]) >= 2}
    assert set(G.merge_points) == {r for r in G.revisions if len(parents[r]) >= 2}
    assert G.closure(G.heads) == set(G.revisions)
    for r in G.revisions:
        assert G.ancestors(r) == {r} | set().union(*(G.ancestors(d) for d in deps_of(G, r)))
        for a in G.ancestors(r):
            assert r in G.descendants(a)
        if len(parents[r]) == 1:
            assert G.resolve(f"{r}-1") == tuple(parents[r])
        if len(children[r]) == 1:
            assert G.resolve(f"{r}+1") == tuple(children[r])


@SETTINGS
@given(graph_and_states())
def test_upgrade_reaches_closure_of_target(case):
    G, cur, tgt = case
    start = G.closure(cur)
    steps = G.upgrade_plan(cur, tgt)
    end = check_up(G, start, steps)
    assert end == start | G.closure(tgt)
    assert (steps[-1].heads_after if steps else cur) == G.heads_of(end)
    assert G.upgrade_plan(G.heads_of(end), tgt) == []  # already there


@SETTINGS
@given(graph_and_states())
def test_downgrade_to_base_removes_exactly_the_applied_set(case):
    G, cur, _ = case
    steps = G.downgrade_plan(cur, ())
    assert sorted(s.revision.revision for s in steps) == sorted(G.closure(cur))
    assert check_down(G, G.closure(cur), steps) == set()


def lines_above(G: RevisionGraph, revs) -> set[str]:
    """Revisions above any of ``revs`` on a down_revision line (parents only, no depends_on),
    computed here from the definitions, not with the graph's own walks."""
    parents = {r: set(G.get(r).down_revision) for r in G.revisions}
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for r in G.revisions:
            if r not in out and parents[r] & (out | set(revs)):
                out.add(r)
                changed = True
    return out


def assert_downgrade_rule(G: RevisionGraph, applied: set[str], kept: set[str], above: set[str], floor) -> None:
    """Alembic's rule: a revision is removed only if it is above the target on a
    down_revision line, or depends on a removed one; and all of those are removed (except
    what the target itself needs)."""
    gone = applied - kept
    for r in gone:
        assert r in above or deps_of(G, r) & gone, r
    assert (above & applied) - G.closure(floor) <= gone
    assert G.closure(floor) <= kept
    assert G.closure(G.heads_of(kept)) == kept  # still a closed state


@SETTINGS
@given(graph_and_states(), st.data())
def test_downgrade_to_applied_target(case, data):
    G, cur, _ = case
    applied = G.closure(cur)
    if not applied:
        return
    picks = data.draw(st.lists(st.sampled_from(sorted(applied)), min_size=1, max_size=3))
    tgt = G.heads_of(G.closure(picks))
    steps = G.downgrade_plan(cur, tgt)
    end = check_down(G, applied, steps)
    # Not "everything that needs the target": a revision that merely depends_on a target
    # member stays (dyn once removed it; Alembic does not, and neither does dyn now).
    assert_downgrade_rule(G, applied, end, lines_above(G, tgt), tgt)
    assert G.downgrade_plan(G.heads_of(end), tgt) == []
    # going back up restores exactly what was removed
    back = G.upgrade_plan(G.heads_of(end), cur)
    assert check_up(G, end, back) == applied


@SETTINGS
@given(graph_and_states(), st.data())
def test_branch_base_downgrade_takes_only_that_branch(case, data):
    """``NAME@base`` removes the branch's own line (and what depends on it), nothing else."""
    G, cur, _ = case
    applied = G.closure(cur)
    name = data.draw(st.sampled_from(sorted(G.revisions)))
    floor = G.resolve(f"{name}@base", cur)
    if not set(floor) <= applied:
        return  # floor not applied: then nothing of the branch is either
    steps = G.downgrade_plan(cur, floor, branch=name)
    end = check_down(G, applied, steps)
    # the branch: the named revision, its descendants, and its single-parent line down to floor
    line = {name} | lines_above(G, [name])
    node = name
    while len(G.get(node).down_revision) == 1 and G.get(node).down_revision[0] not in floor:
        node = G.get(node).down_revision[0]
        line.add(node)
    assert_downgrade_rule(G, applied, end, line, floor)
    assert not (line & end)
    back = G.upgrade_plan(G.heads_of(end), cur)
    assert check_up(G, end, back) == applied


@SETTINGS
@given(graph_and_states())
def test_heads_of_closure_round_trip(case):
    G, cur, tgt = case
    for state in (cur, tgt):
        C = G.closure(state)
        assert G.heads_of(C) == state
        assert G.closure(G.heads_of(C)) == C


@SETTINGS
@given(dags(deps=False), st.data())
def test_heads_of_closure_of_antichain(revs, data):
    G = RevisionGraph(revs)
    picks = data.draw(st.lists(st.sampled_from(sorted(G.revisions)), max_size=5, unique=True))
    H = [h for h in picks if not any(h != o and h in G.ancestors(o) for o in picks)]
    assert set(G.heads_of(G.closure(H))) == set(H)


@SETTINGS
@given(dags(), st.data())
def test_heads_of_antichain_with_depends_on_keeps_members(revs, data):
    G = RevisionGraph(revs)
    picks = data.draw(st.lists(st.sampled_from(sorted(G.revisions)), max_size=5, unique=True))
    H = [h for h in picks if not any(h != o and h in G.ancestors(o) for o in picks)]
    assert set(H) <= set(G.heads_of(G.closure(H)))


@SETTINGS
@given(graph_and_states())
def test_relative_targets_agree_with_plans(case):
    G, cur, _ = case
    if len(cur) != 1:
        return
    (h,) = cur
    down = G.resolve("-1", cur)
    steps = G.downgrade_plan(cur, down)
    # -1 from a single head removes that head (and nothing structural below it)
    assert h in [s.revision.revision for s in steps]
    assert G.closure(down) <= G.closure(cur) - {h}
