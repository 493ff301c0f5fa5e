"""Unit tests for dynamic.graph: construction, queries, target resolution, plans."""
from __future__ import annotations

import random
import time

import pytest

from dynamic.errors import DynError, GraphError, MultipleHeads, ScriptError, UnknownRevision
from dynamic.graph import Revision, RevisionGraph, Step


def rev(spec: str) -> Revision:
    """``"id[:parent,parent][~dep,dep][@label,label]"`` -> Revision (path versions/<id>.py)."""
    spec, _, labels = spec.partition("@")
    spec, _, deps = spec.partition("~")
    rid, _, parents = spec.partition(":")
    split = lambda s: tuple(x for x in s.split(",") if x)  # noqa: E731
    return Revision(
        rid, split(parents), split(labels), split(deps), doc=f"message {rid}", path=f"versions/{rid}.py"
    )


def g(*specs: str) -> RevisionGraph:
    return RevisionGraph(rev(s) for s in specs)


def raises(exc_type, fn, *args, **kwargs) -> str:
    """Assert ``fn`` raises exactly ``exc_type`` with a one-line message; return the message."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert type(info.value) is exc_type
    msg = str(info.value)
    assert msg and "\n" not in msg
    assert isinstance(info.value, DynError)
    return msg


def ids(steps: list[Step]) -> list[str]:
    return [s.revision.revision for s in steps]


def assert_chained(steps: list[Step], start: tuple[str, ...], end: tuple[str, ...]) -> None:
    heads = start
    for s in steps:
        assert s.heads_before == heads
        heads = s.heads_after
    assert heads == end


LINEAR = ("a", "b:a", "c:b", "d:c")
DIAMOND = ("a", "b:a", "c:b", "d:b", "m:c,d")
# two long-lived branches off a root: x1-x3 and y1-y2
FORK = ("r", "x1:r@xb", "x2:x1", "x3:x2", "y1:r@yb", "y2:y1")
# two independent bases, the second labelled
TWO_BASES = ("a1", "a2:a1@main", "n1@net", "n2:n1", "n3:n2")


# -- construction and validation ---------------------------------------------------------------


def test_empty_graph_is_valid():
    G = RevisionGraph([])
    assert len(G) == 0
    assert G.heads == () and G.bases == ()
    assert G.resolve("head") == () and G.resolve("heads") == () and G.resolve("base") == ()
    assert G.upgrade_plan((), ()) == []
    assert G.downgrade_plan((), ()) == []
    assert G.history() == []
    assert "nothing above it" in raises(GraphError, G.resolve, "+1")
    raises(UnknownRevision, G.resolve, "head-1")


def test_linear_chain_queries():
    G = g(*LINEAR)
    assert G.heads == ("d",)
    assert G.bases == ("a",)
    assert G.branch_points == () and G.merge_points == ()
    assert list(G.revisions) == ["a", "b", "c", "d"]
    assert G.get("c").doc == "message c"
    assert G.children("b") == ("c",)
    assert G.is_head("d") and not G.is_head("c") and not G.is_head("zz")


def test_revision_normalises_strings_and_none():
    r = Revision("b", "a", None, "x")  # type: ignore[arg-type]
    assert r.down_revision == ("a",) and r.branch_labels == () and r.depends_on == ("x",)
    assert Revision("a", ("",)).down_revision == ()


def test_input_order_does_not_matter():
    specs = list(FORK) + ["m:x3,y2", "z:m"]
    expected = g(*specs)
    for seed in range(5):
        shuffled = specs[:]
        random.Random(seed).shuffle(shuffled)
        G = g(*shuffled)
        assert list(G.revisions) == list(expected.revisions)
        assert G.heads == expected.heads
        assert ids(G.upgrade_plan((), G.heads)) == ids(expected.upgrade_plan((), expected.heads))


def test_duplicate_revision_id_names_both_files():
    msg = raises(ScriptError, g, "abc123", "x:abc123", "abc123:x")
    assert "duplicate revision id 'abc123' in versions/abc123.py and versions/abc123.py" in msg
    msg = raises(
        ScriptError,
        RevisionGraph,
        [Revision("abc123", path="versions/a.py"), Revision("abc123", path="versions/b.py")],
    )
    assert msg.startswith("duplicate revision id 'abc123' in versions/a.py and versions/b.py")


def test_missing_down_revision():
    msg = raises(GraphError, g, "a", "x:y")
    assert msg.startswith("revision 'x' (versions/x.py) has down_revision 'y', which does not exist")


def test_missing_depends_on():
    msg = raises(GraphError, g, "a", "b:a~nope")
    assert "revision 'b' (versions/b.py) has depends_on 'nope', which does not exist" in msg


def test_depends_on_may_name_a_branch_label():
    G = g("a", "b:a@lib", "x", "y:x~lib")
    assert "b" in G.ancestors("y")
    assert G.heads == ("b", "y")


def test_cycle_is_named_in_order():
    msg = raises(GraphError, g, "a", "b:a,d", "c:b", "d:c")
    assert "b -> c -> d -> b" in msg
    assert "'a'" not in msg and " a " not in msg


def test_cycle_through_depends_on():
    msg = raises(GraphError, g, "a~c", "b:a", "c:b")
    assert "a -> b -> c -> a" in msg


def test_self_cycle():
    msg = raises(GraphError, g, "a", "b:b")
    assert "b -> b" in msg


def test_cycle_with_no_base():
    msg = raises(GraphError, g, "p:q", "q:p")
    assert "p -> q -> p" in msg


def test_branch_label_used_twice():
    msg = raises(GraphError, g, "a@x", "b:a@x")
    assert "branch label 'x'" in msg and "'a'" in msg and "'b'" in msg


def test_branch_label_clashing_with_id_or_keyword():
    assert "'b'" in raises(GraphError, g, "a@b", "b:a")
    assert "'head'" in raises(GraphError, g, "a@head")


def test_reserved_or_unparseable_revision_ids():
    for bad in ("head", "base", "+1", "a@b", "a b"):
        msg = raises(ScriptError, RevisionGraph, [Revision(bad, path="versions/bad.py")])
        assert "versions/bad.py" in msg


# -- structure -----------------------------------------------------------------------------------


def test_branches_and_merges():
    G = g(*DIAMOND)
    assert G.heads == ("m",)
    assert G.branch_points == ("b",) and G.merge_points == ("m",)
    assert G.is_branch_point("b") and G.is_merge_point("m") and not G.is_merge_point("c")
    G2 = g(*FORK)
    assert G2.heads == ("x3", "y2")
    assert G2.branch_points == ("r",)


def test_depends_on_does_not_change_heads():
    G = g("a1", "a2:a1", "b1~a2", "b2:b1")
    assert G.heads == ("a2", "b2")
    assert G.bases == ("a1", "b1")
    assert G.ancestors("b2") == {"a1", "a2", "b1", "b2"}
    assert G.ancestors("b2", include_self=False) == {"a1", "a2", "b1"}
    assert G.descendants("a2") == {"a2", "b1", "b2"}
    assert G.descendants("a1", include_self=False) == {"a2", "b1", "b2"}
    assert G.closure(["b1"]) == {"a1", "a2", "b1"}
    assert G.heads_of(G.closure(["b1"])) == ("a2", "b1")
    assert G.closure([]) == set()


def test_heads_of():
    G = g(*DIAMOND)
    assert G.heads_of({"a", "b", "c"}) == ("c",)
    assert G.heads_of({"a", "b", "c", "d"}) == ("c", "d")
    assert G.heads_of(set()) == ()


def test_check_known():
    G = g(*LINEAR)
    G.check_known(["a", "d"])
    msg = raises(GraphError, G.check_known, ["a", "zz"])
    assert msg == (
        "the table records revision 'zz', which is not in the versions directory: "
        "restore its file, or `dyn stamp` the table to a known revision"
    )
    msg = raises(GraphError, G.check_known, ["x", "y"], where="table 'prod'")
    assert msg.startswith("table 'prod' records revisions 'x', 'y'")


def test_get_unknown():
    msg = raises(UnknownRevision, g(*LINEAR).get, "zzz")
    assert msg == "unknown revision 'zzz': run `dyn history` to list revisions"


# -- identifiers ---------------------------------------------------------------------------------


def test_resolve_id():
    G = g("abcd1111", "abcd2222:abcd1111", "ffff0000:abcd2222")
    assert G.resolve_id("abcd1111") == "abcd1111"
    assert G.resolve_id("ffff") == "ffff0000"
    assert G.resolve_id("abcd2") == "abcd2222"
    msg = raises(UnknownRevision, G.resolve_id, "abcd")
    assert "ambiguous" in msg and "abcd1111" in msg and "abcd2222" in msg
    msg = raises(UnknownRevision, G.resolve_id, "fff")  # too short to be a prefix
    assert "'fff'" in msg and "at least 4" in msg
    msg = raises(UnknownRevision, G.resolve_id, "zzz")
    assert msg == "unknown revision 'zzz': run `dyn history` to list revisions"


def test_exact_id_beats_prefix():
    G = g("abcd", "abcdef:abcd")
    assert G.resolve_id("abcd") == "abcd"
    assert G.resolve("abcd") == ("abcd",)


# -- targets ---------------------------------------------------------------------------------------


def test_resolve_head_heads_base():
    G = g(*LINEAR)
    assert G.resolve("head") == ("d",)
    assert G.resolve("heads") == ("d",)
    assert G.resolve("base") == ()
    assert G.resolve(" head ") == ("d",)


def test_multiple_heads_message():
    G = g("a", "a1b2:a", "c3d4:a")
    msg = raises(MultipleHeads, G.resolve, "head")
    assert msg == (
        "multiple heads (a1b2, c3d4): use `heads`, `label@head` or a revision id, "
        "or join them with `dyn merge`"
    )
    assert G.resolve("heads") == ("a1b2", "c3d4")


def test_resolve_id_and_prefix_targets():
    G = g("aaaa1", "bbbb2:aaaa1", "cccc3:bbbb2")
    assert G.resolve("bbbb2") == ("bbbb2",)
    assert G.resolve("cccc") == ("cccc3",)
    assert G.resolve("current", ["bbbb2"]) == ("bbbb2",)
    assert G.resolve("current", ["aaaa1", "bbbb2"]) == ("bbbb2",)  # normalised
    msg = raises(UnknownRevision, G.resolve, "zzz")
    assert msg == "unknown revision 'zzz': run `dyn history` to list revisions"


def test_relative_up():
    G = g(*LINEAR)
    assert G.resolve("+1") == ("a",)  # from base
    assert G.resolve("+3") == ("c",)
    assert G.resolve("+1", ["b"]) == ("c",)
    assert G.resolve("+2", ["b"]) == ("d",)
    assert G.resolve("+0", ["b"]) == ("b",)
    msg = raises(GraphError, G.resolve, "+3", ["b"])
    assert msg == "cannot go +3 from 'b': only 2 revisions above it"
    assert "nothing above it" in raises(GraphError, G.resolve, "+1", ["d"])


def test_relative_down():
    G = g(*LINEAR)
    assert G.resolve("-1", ["d"]) == ("c",)
    assert G.resolve("-3", ["d"]) == ("a",)
    assert G.resolve("-4", ["d"]) == ()  # base
    msg = raises(GraphError, G.resolve, "-5", ["d"])
    assert msg == "cannot go -5 from 'd': only 3 revisions below it (-4 is base)"
    assert G.resolve("-1", ["a"]) == ()
    assert "nothing below it" in raises(GraphError, G.resolve, "-2", ["a"])
    msg = raises(GraphError, G.resolve, "-1", [])
    assert "base" in msg


def test_relative_with_several_current_heads():
    G = g(*FORK)
    msg = raises(GraphError, G.resolve, "-1", ["x3", "y2"])
    assert "x3, y2" in msg and "label@-1" in msg
    msg = raises(GraphError, G.resolve, "+1", ["x1", "y1"])
    assert "x1, y1" in msg


def test_relative_up_at_branch_point_or_several_bases():
    msg = raises(GraphError, g(*FORK).resolve, "+1", ["r"])
    assert "'r' is a branch point (x1, y1)" in msg and "label@+N" in msg
    msg = raises(GraphError, g(*TWO_BASES).resolve, "+1")
    assert "several bases (a1, n1)" in msg


def test_relative_to_unknown_current():
    msg = raises(GraphError, g(*LINEAR).resolve, "+1", ["gone"])
    assert "'gone'" in msg and "dyn stamp" in msg


def test_down_from_merge_gives_parents():
    G = g(*DIAMOND)
    assert G.resolve("-1", ["m"]) == ("c", "d")
    assert G.resolve("-2", ["m"]) == ("b",)
    assert G.resolve("m-1") == ("c", "d")
    assert G.resolve("m-3") == ("a",)
    # a merge whose parents are at different depths: one layer at a time
    G2 = g("a", "b:a", "c:b", "d:a", "m:c,d")
    assert G2.resolve("m-1") == ("c", "d")
    assert G2.resolve("m-2") == ("b",)  # each step removes every current head
    assert G2.resolve("m-3") == ("a",)
    assert G2.resolve("m-4") == ()


def test_rev_plus_minus():
    G = g("aaaa1", "bbbb2:aaaa1", "cccc3:bbbb2", "dddd4:cccc3")
    assert G.resolve("bbbb2+1") == ("cccc3",)
    assert G.resolve("bbbb+2") == ("dddd4",)  # prefix + N
    assert G.resolve("dddd4-2") == ("bbbb2",)
    assert G.resolve("head-1") == ("cccc3",)
    raises(MultipleHeads, g("a", "b:a", "c:a").resolve, "head-1")
    msg = raises(GraphError, G.resolve, "bbbb2-3")
    assert msg == "cannot go bbbb2-3 from 'bbbb2': only 1 revision below it (-2 is base)"
    msg = raises(UnknownRevision, G.resolve, "zzzz9+1")
    assert "'zzzz9+1'" in msg


def test_labels_with_dashes_and_digits_are_not_relative():
    G = g("a", "b:a@release-2", "c:b")
    assert G.resolve("release-2") == ("c",)  # bare label = label@head


def test_label_forms():
    G = g(*FORK)
    assert G.resolve("xb@head") == ("x3",)
    assert G.resolve("xb") == ("x3",)
    assert G.resolve("yb") == ("y2",)
    assert G.resolve("yb@base", ["y2"]) == ("r",)
    assert G.resolve("xb@+1", ["r"]) == ("x1",)  # nothing of the branch applied yet
    assert G.resolve("xb@+2", ["r"]) == ("x2",)
    assert G.resolve("xb@+1", ["x1", "y2"]) == ("x2",)
    assert G.resolve("xb@-1", ["x3", "y2"]) == ("x2",)
    assert G.resolve("yb@-1", ["x3", "y2"]) == ("y1",)
    assert G.resolve("x1@head") == ("x3",)  # a revision id works as a branch name
    assert G.resolve("xb@+1", []) == ("x1",)


def test_label_relative_errors():
    G = g(*FORK)
    msg = raises(GraphError, G.resolve, "xb@-1", ["y2"])
    assert "branch 'xb'" in msg
    msg = raises(GraphError, G.resolve, "xb@+3", ["x1", "y2"])
    assert "only 2 revisions above it" in msg
    msg = raises(GraphError, G.resolve, "xb@-5", ["x3", "y2"])
    assert msg == "cannot go xb@-5 from 'x3': only 3 revisions below it (-4 is base)"
    msg = raises(UnknownRevision, G.resolve, "nope@head")
    assert "'nope'" in msg and "xb" in msg
    msg = raises(GraphError, G.resolve, "xb@sideways")
    assert "'xb@sideways'" in msg


def test_label_with_several_heads():
    G = g("a", "b:a@lbl", "c:b", "d:b")
    msg = raises(MultipleHeads, G.resolve, "lbl@head")
    assert "'lbl'" in msg and "c, d" in msg


def test_label_downgrade_never_takes_other_branches_down():
    G = g(*FORK)
    # xb@base is r, and going down to r would also remove y1 and y2
    msg = raises(GraphError, G.resolve, "xb@base", ["x3", "y2"])
    assert "outside branch 'xb'" in msg and "y1, y2" in msg
    # ... unless they are not applied
    assert G.resolve("xb@base", ["x3"]) == ("r",)
    # independent bases: net@base is base, fine only when nothing else is applied
    G2 = g(*TWO_BASES)
    assert G2.resolve("net@base", ["n3"]) == ()
    msg = raises(GraphError, G2.resolve, "net@base", ["a2", "n3"])
    assert "a1, a2" in msg
    assert "a1, a2" in raises(GraphError, G2.resolve, "net@-3", ["a2", "n3"])
    assert G2.resolve("net@-2", ["a2", "n3"]) == ("n1",)
    # label on an independent base takes in the whole line below it
    assert G2.resolve("main@base") == ()
    assert G2.resolve("main@+1", []) == ("a1",)


# -- upgrade plans ---------------------------------------------------------------------------------


def test_upgrade_linear():
    G = g(*LINEAR)
    steps = G.upgrade_plan((), ("d",))
    assert ids(steps) == ["a", "b", "c", "d"]
    assert all(s.direction == "up" for s in steps)
    assert [s.heads_after for s in steps] == [("a",), ("b",), ("c",), ("d",)]
    assert_chained(steps, (), ("d",))
    assert ids(G.upgrade_plan(("b",), ("d",))) == ["c", "d"]
    assert ids(G.upgrade_plan(("b",), G.resolve("+1", ["b"]))) == ["c"]


def test_upgrade_to_target_already_applied_is_empty():
    G = g(*LINEAR)
    assert G.upgrade_plan(("d",), ("d",)) == []
    assert G.upgrade_plan(("d",), ("b",)) == []
    assert G.upgrade_plan((), ()) == []


def test_upgrade_unknown_current_or_target():
    G = g(*LINEAR)
    assert "dyn stamp" in raises(GraphError, G.upgrade_plan, ("zz",), ("d",))
    raises(UnknownRevision, G.upgrade_plan, ("a",), ("zz",))


def test_upgrade_branches_finishes_one_line_first():
    G = g(*FORK, "m:x3,y2")
    steps = G.upgrade_plan((), G.resolve("head"))
    assert ids(steps) == ["r", "x1", "x2", "x3", "y1", "y2", "m"]
    assert_chained(steps, (), ("m",))
    assert steps[4].heads_before == ("x3",) and steps[4].heads_after == ("x3", "y1")
    assert steps[-1].heads_before == ("x3", "y2") and steps[-1].heads_after == ("m",)


def test_upgrade_one_branch_only():
    G = g(*FORK)
    steps = G.upgrade_plan(("x1",), G.resolve("yb@head"))
    assert ids(steps) == ["y1", "y2"]
    assert_chained(steps, ("x1",), ("x1", "y2"))
    steps = G.upgrade_plan(("x1", "y1"), G.resolve("heads"))
    assert ids(steps) == ["x2", "x3", "y2"]
    assert_chained(steps, ("x1", "y1"), ("x3", "y2"))


def test_upgrade_to_merge_pulls_in_other_parent():
    G = g(*DIAMOND)
    steps = G.upgrade_plan(("c",), ("m",))
    assert ids(steps) == ["d", "m"]
    assert_chained(steps, ("c",), ("m",))


def test_upgrade_with_depends_on_across_branches():
    G = g("a1", "a2:a1", "a3:a2", "b1~a2", "b2:b1")
    steps = G.upgrade_plan((), ("b2",))
    assert ids(steps) == ["a1", "a2", "b1", "b2"]
    assert_chained(steps, (), ("a2", "b2"))
    steps = G.upgrade_plan(("a3",), ("b2",))
    assert ids(steps) == ["b1", "b2"]
    assert_chained(steps, ("a3",), ("a3", "b2"))


# -- downgrade plans -------------------------------------------------------------------------------


def test_downgrade_linear():
    G = g(*LINEAR)
    steps = G.downgrade_plan(("d",), ("b",))
    assert ids(steps) == ["d", "c"]
    assert all(s.direction == "down" for s in steps)
    assert_chained(steps, ("d",), ("b",))
    steps = G.downgrade_plan(("d",), G.resolve("-1", ["d"]))
    assert ids(steps) == ["d"]
    assert steps[0].heads_before == ("d",) and steps[0].heads_after == ("c",)


def test_downgrade_to_base():
    G = g(*LINEAR)
    steps = G.downgrade_plan(("c",), ())
    assert ids(steps) == ["c", "b", "a"]
    assert_chained(steps, ("c",), ())
    assert G.downgrade_plan((), ()) == []  # already at base
    assert G.downgrade_plan(("c",), ("c",)) == []  # already there


def test_downgrade_errors():
    G = g(*LINEAR)
    msg = raises(GraphError, G.downgrade_plan, (), ("a",))
    assert msg.startswith("nothing to downgrade: the table is at base")
    msg = raises(GraphError, G.downgrade_plan, ("b",), ("c",))
    assert msg.startswith("cannot downgrade to 'c': it is not applied (current: b)")
    raises(UnknownRevision, G.downgrade_plan, ("b",), ("zz",))
    assert "'zz'" in raises(GraphError, G.downgrade_plan, ("zz",), ())


def test_downgrade_one_branch_leaves_the_other():
    G = g(*FORK)
    steps = G.downgrade_plan(("x3", "y2"), ("x1",))
    assert ids(steps) == ["x3", "x2"]
    assert_chained(steps, ("x3", "y2"), ("x1", "y2"))
    steps = G.downgrade_plan(("x3", "y2"), G.resolve("yb@-1", ["x3", "y2"]))
    assert ids(steps) == ["y2"]
    assert_chained(steps, ("x3", "y2"), ("x3", "y1"))
    # going further down yb means going to r, which would take xb down too: refused
    assert "x1, x2, x3" in raises(GraphError, G.resolve, "yb@-2", ["x3", "y2"])


def test_downgrade_everything_across_branches_children_first():
    G = g(*FORK, "m:x3,y2")
    steps = G.downgrade_plan(("m",), ())
    assert ids(steps) == ["m", "y2", "y1", "x3", "x2", "x1", "r"]
    assert_chained(steps, ("m",), ())


def test_downgrade_below_merge():
    G = g(*DIAMOND)
    steps = G.downgrade_plan(("m",), G.resolve("-1", ["m"]))
    assert ids(steps) == ["m"]
    assert steps[0].heads_after == ("c", "d")
    steps = G.downgrade_plan(("m",), ("c",))
    assert ids(steps) == ["m"]  # d is not above c: it stays
    assert_chained(steps, ("m",), ("c", "d"))
    steps = G.downgrade_plan(("m",), ("b",))
    assert ids(steps) == ["m", "d", "c"]
    assert_chained(steps, ("m",), ("b",))


def test_downgrade_removes_dependents():
    G = g("a1", "a2:a1", "a3:a2", "b1~a2", "b2:b1")
    steps = G.downgrade_plan(("a3", "b2"), ("a1",))
    assert set(ids(steps)) == {"a3", "a2", "b1", "b2"}
    assert ids(steps).index("b1") < ids(steps).index("a2")
    assert ids(steps).index("b2") < ids(steps).index("b1")
    assert_chained(steps, ("a3", "b2"), ("a1",))
    # the dependency stays when only the dependent branch goes down
    steps = G.downgrade_plan(("a3", "b2"), ("b1",))
    assert ids(steps) == ["b2"]
    assert_chained(steps, ("a3", "b2"), ("a3", "b1"))


def test_upgrade_then_downgrade_round_trip():
    G = g(*DIAMOND, "z:m")
    up = G.upgrade_plan(("b",), ("z",))
    down = G.downgrade_plan(("z",), ("b",))
    assert ids(down) == ids(up)[::-1]
    assert [(s.heads_before, s.heads_after) for s in down] == [(s.heads_after, s.heads_before) for s in up[::-1]]


# -- history ---------------------------------------------------------------------------------------


def test_history_newest_first():
    G = g(*DIAMOND)
    assert [r.revision for r in G.history()] == ["m", "d", "c", "b", "a"]


def test_history_ranges():
    G = g(*FORK, "m:x3,y2")
    h = lambda *a, **k: [r.revision for r in G.history(*a, **k)]  # noqa: E731
    assert h("x1", None) == ["m", "x3", "x2", "x1"]
    assert h(None, "x2") == ["x2", "x1", "r"]
    assert h("x1", "x3") == ["x3", "x2", "x1"]
    assert h("base", "y2") == ["y2", "y1", "r"]
    assert h("base", "yb") == h()  # the label reaches the merge and beyond
    assert h("r", "base") == []
    assert h("current", "head", current=["y2"]) == ["m", "y2"]
    raises(UnknownRevision, G.history, "zzzz")


# -- scale -----------------------------------------------------------------------------------------


def test_long_chain_is_fast_and_not_recursive():
    n = 3000
    revs = [Revision(f"r{i:05d}", (f"r{i - 1:05d}",) if i else ()) for i in range(n)]
    random.Random(1).shuffle(revs)
    t0 = time.perf_counter()
    G = RevisionGraph(revs)
    last, first = f"r{n - 1:05d}", "r00000"
    assert G.heads == (last,) and G.bases == (first,)
    up = G.upgrade_plan((), G.resolve("head"))
    assert len(up) == n and up[0].revision.revision == first
    assert_chained(up, (), (last,))
    down = G.downgrade_plan((last,), ())
    assert len(down) == n and down[0].revision.revision == last
    assert G.resolve(f"-{n - 1}", [last]) == (first,)
    assert G.resolve(f"-{n}", [last]) == ()
    assert G.resolve(f"+{n}") == (last,)
    assert len(G.ancestors(last)) == n and len(G.descendants(first)) == n
    assert len(G.history()) == n
    assert G.resolve("r01500") == ("r01500",)
    assert "ambiguous" in raises(UnknownRevision, G.resolve, "r0150")
    assert time.perf_counter() - t0 < 3
