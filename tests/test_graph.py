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


def removed(G: RevisionGraph, current, target: str) -> tuple[set[str], tuple[str, ...]]:
    """What ``dyn downgrade TARGET`` removes from ``current`` (a set), and the heads after;
    the steps are checked to chain and to end at the heads of what is left."""
    t = G.resolve_target(target, current)
    steps = G.downgrade_plan(current, t.revisions, branch=t.branch)
    start = G.heads_of(G.closure(current))
    end = steps[-1].heads_after if steps else start
    assert_chained(steps, start, end)
    gone = set(ids(steps))
    assert end == G.heads_of(G.closure(current) - gone)
    return gone, end


def applied(G: RevisionGraph, current, target: str) -> tuple[set[str], tuple[str, ...]]:
    """What ``dyn upgrade TARGET`` applies from ``current`` (a set), and the heads after."""
    steps = G.upgrade_plan(current, G.resolve(target, current))
    start = G.heads_of(G.closure(current))
    end = steps[-1].heads_after if steps else start
    assert_chained(steps, start, end)
    return set(ids(steps)), end


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
        "restore its file, or record the revision the table is really at with `dyn stamp REV` (a revision "
        "`dyn history` lists, or base)"
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
    assert msg == "cannot go -1 from several heads (x3, y2): name the branch, e.g. `x3@-1` or `y2@-1`"
    # the advice works: each takes exactly its own head down
    assert removed(G, ["x3", "y2"], "x3@-1") == ({"x3"}, ("x2", "y2"))
    assert removed(G, ["x3", "y2"], "y2@-1") == ({"y2"}, ("x3", "y1"))
    msg = raises(GraphError, G.resolve, "+1", ["x1", "y1"])
    assert "(x1, y1)" in msg and "`xb@+1` or `yb@+1`" in msg  # x1, y1 carry those labels
    assert G.resolve("xb@+1", ["x1", "y1"]) == ("x2",)
    assert G.resolve("yb@+1", ["x1", "y1"]) == ("y2",)


def test_relative_from_three_heads_names_each():
    G = g("r", "a:r", "b:r", "c:r")
    msg = raises(GraphError, G.resolve, "-1", ["a", "b", "c"])
    assert msg.endswith("e.g. `a@-1` or `b@-1` or `c@-1`")
    assert removed(G, ["a", "b", "c"], "c@-1") == ({"c"}, ("a", "b"))


def test_relative_up_at_branch_point_or_several_bases():
    G = g(*FORK)
    msg = raises(GraphError, G.resolve, "+1", ["r"])
    assert msg == "cannot go +1 from 'r': 'r' is a branch point (x1, y1): name the branch, e.g. `xb@+1` or `yb@+1`"
    assert G.resolve("xb@+1", ["r"]) == ("x1",) and G.resolve("yb@+1", ["r"]) == ("y1",)
    msg = raises(GraphError, G.resolve, "r+2")
    assert "`xb@r+2` or `yb@r+2`" in msg
    assert G.resolve("xb@r+2") == ("x2",)
    msg = raises(GraphError, g(*TWO_BASES).resolve, "+1")
    assert "several bases (a1, n1)" in msg and "`a1@+1` or `net@+1`" in msg
    assert g(*TWO_BASES).resolve("net@+1") == ("n1",) and g(*TWO_BASES).resolve("a1@+1") == ("a1",)


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
    assert G.resolve("xb@+1", ["y2"]) == ("x1",)  # from the branch point, which y2 implies
    assert G.resolve("xb@+2", ["r"]) == ("x2",)
    assert G.resolve("xb@+1", ["x1", "y2"]) == ("x2",)
    assert G.resolve("xb@-1", ["x3", "y2"]) == ("x2",)
    assert G.resolve("yb@-1", ["x3", "y2"]) == ("y1",)
    assert G.resolve("x1@head") == ("x3",)  # a revision id works as a branch name
    # from base, +1 is one revision: the shared root first (Alembic counts the same way)
    assert G.resolve("xb@+1", []) == ("r",)
    assert G.resolve("xb@+2", []) == ("x1",)


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
    assert msg == (
        "cannot read target 'xb@sideways': after '@' use head, heads, base, +N, -N, head-N,"
        " base+N or a revision of the branch"
    )


def test_label_with_several_heads():
    G = g("a", "b:a@lbl", "c:b", "d:b")
    msg = raises(MultipleHeads, G.resolve, "lbl@head")
    assert "'lbl'" in msg and "c, d" in msg


def test_label_base_takes_only_that_branch_down():
    G = g(*FORK)
    cur = ["x3", "y2"]
    assert G.resolve("xb@base", cur) == ("r",)
    assert removed(G, cur, "xb@base") == ({"x1", "x2", "x3"}, ("y2",))
    assert removed(G, cur, "yb@base") == ({"y1", "y2"}, ("x3",))
    # a plain revision target takes every branch above it down
    assert removed(G, cur, "r") == ({"x1", "x2", "x3", "y1", "y2"}, ("r",))
    # the same branch named by any of its revisions, or walked down to its branch point
    for same in ("x2@base", "x3@base", "xb@-3", "xb@r", "xb@base+1"):
        assert removed(G, cur, same) == ({"x1", "x2", "x3"}, ("y2",)), same
    assert removed(G, ["x3"], "xb@base") == ({"x1", "x2", "x3"}, ("r",))
    assert removed(G, ["y2"], "xb@base") == (set(), ("y2",))  # nothing of it applied


def test_label_base_on_independent_bases():
    G = g(*TWO_BASES)
    cur = ["a2", "n3"]
    assert G.resolve("net@base", cur) == ()
    assert removed(G, cur, "net@base") == ({"n1", "n2", "n3"}, ("a2",))
    assert removed(G, cur, "main@base") == ({"a1", "a2"}, ("n3",))
    assert removed(G, cur, "net@-3") == ({"n1", "n2", "n3"}, ("a2",))
    assert removed(G, cur, "net@-2") == ({"n2", "n3"}, ("a2", "n1"))
    assert removed(G, cur, "base") == ({"a1", "a2", "n1", "n2", "n3"}, ())
    # a label on an independent base takes in the whole line below it
    assert G.resolve("main@base") == ()
    assert G.resolve("main@+1", []) == ("a1",)


def test_label_downgrade_never_takes_another_line_down():
    G = g(*FORK)
    cur = ["x3", "y2"]
    # xb@-4 is base: below xb's branch point r, so y1 and y2 would go too
    t = G.resolve_target("xb@-4", cur)
    assert t.revisions == () and t.branch == "xb"
    msg = raises(GraphError, G.downgrade_plan, cur, t.revisions, branch=t.branch)
    assert msg == (
        "branch 'xb' starts above r: going to base would also remove r, y1, y2,"
        " which are not on it; use `xb@base` to take the branch down; `dyn downgrade base` takes"
        " every branch down to base"
    )
    msg = raises(GraphError, G.resolve, "xb@-5", cur)
    assert msg == "cannot go xb@-5 from 'x3': only 3 revisions below it (-4 is base)"
    # a shared root below the branch point, named as a revision of the branch's line
    G2 = g("p", "r:p", "x1:r@xb", "x2:x1", "y1:r@yb")
    t = G2.resolve_target("xb@p", ["x2", "y1"])
    msg = raises(GraphError, G2.downgrade_plan, ["x2", "y1"], t.revisions, branch=t.branch)
    assert "going to p would also remove r, y1" in msg and "`dyn downgrade p`" in msg
    assert removed(G2, ["x2", "y1"], "xb@base") == ({"x1", "x2"}, ("y1",))


def test_label_downgrade_through_a_merge():
    G = g(*FORK, "m:x3,y2")
    assert removed(G, ["m"], "xb@-1") == ({"m"}, ("x3", "y2"))
    assert removed(G, ["m"], "xb@-2") == ({"m", "x3"}, ("x2", "y2"))
    assert removed(G, ["m"], "xb@base") == ({"m", "x1", "x2", "x3"}, ("y2",))
    assert removed(G, ["m"], "yb@base") == ({"m", "y1", "y2"}, ("x3",))


def test_label_base_of_a_merge_over_a_line():
    """A labelled merge whose parents are a and b, with a below b: its base is b (the layer
    below it), so b's other child c stays (found by the property test)."""
    G = g("a", "b:a", "c:b", "m:a,b@mb")
    assert G.resolve("mb@base") == ("b",)
    assert removed(G, ["c", "m"], "mb@base") == ({"m"}, ("c",))
    assert removed(G, ["c", "m"], "b") == ({"c", "m"}, ("b",))


def test_label_downgrade_takes_dependents_down_too():
    """Alembic's BranchedPathTestCrossDependencies: d2 depends on c1, so reverting c1branch
    takes d2 with it (it cannot stay without c1); reverting c2branch leaves c1branch alone."""
    G = g("a", "b:a", "c1:b@c1branch", "d1:c1", "c2:b@c2branch", "d2:c2~c1")
    assert removed(G, ["d1", "d2"], "c2branch@b") == ({"c2", "d2"}, ("d1",))
    assert removed(G, ["d1", "d2"], "c1branch@b") == ({"c1", "d1", "d2"}, ("c2",))
    steps = ids(G.downgrade_plan(["d1", "d2"], ("b",), branch="c1branch"))
    assert steps.index("d2") < steps.index("c1") and steps.index("d1") < steps.index("c1")


def test_label_rev_must_be_on_the_branch():
    G = g(*FORK)
    msg = raises(GraphError, G.resolve, "xb@y1")
    assert msg == "revision 'y1' is not on branch 'xb': run `dyn history -r xb@base:heads` to list that branch"
    assert [r.revision for r in G.history("xb@base", "heads")] == ["x3", "x2", "x1", "r"]  # the advice works
    assert "'y1' is not on branch 'xb'" in raises(GraphError, G.resolve, "xb@y1+1")
    msg = raises(UnknownRevision, G.resolve, "xb@zzzz+1")
    assert msg == "unknown revision 'zzzz' in 'xb@zzzz+1': run `dyn history` to list revisions"
    assert "'xb@zzzz'" in raises(GraphError, G.resolve, "xb@zzzz")


def test_label_grammar():
    G = g(*FORK, "x4a:x3", "x4b:x3")
    assert G.resolve("xb@heads") == ("x4a", "x4b")
    assert G.resolve("yb@heads") == ("y2",)
    msg = raises(MultipleHeads, G.resolve, "xb@head")
    assert "`xb@heads`" in msg and "x4a, x4b" in msg
    assert G.resolve("yb@head-1") == ("y1",)
    assert G.resolve("yb@head-2") == ("r",)
    assert G.resolve("xb@base+2") == ("x1",)
    assert G.resolve("xb@base+4") == ("x3",)
    msg = raises(GraphError, G.resolve, "xb@base+5")
    assert "'x3' is a branch point (x4a, x4b)" in msg and "`x4a@base+5`" in msg
    assert G.resolve("x4a@base+5") == ("x4a",)  # the advice works
    assert G.resolve("xb@x1") == ("x1",) and G.resolve("xb@x1+2") == ("x3",) and G.resolve("xb@x3-2") == ("x1",)
    assert G.resolve("xb@r") == ("r",)  # the branch point is on the branch's line
    assert "nothing is below base" in raises(GraphError, G.resolve, "xb@base-1")
    assert "nothing above it" in raises(GraphError, G.resolve, "yb@head+1")
    assert G.resolve("xb@+0", ["x2", "y2"]) == ("x2",)


def test_base_plus_n():
    G = g(*LINEAR)
    assert G.resolve("base+1") == ("a",) and G.resolve("base+4") == ("d",) and G.resolve("base+0") == ()
    assert applied(G, [], "base+2") == ({"a", "b"}, ("b",))
    assert removed(G, ["d"], "base+1") == ({"b", "c", "d"}, ("a",))
    msg = raises(GraphError, G.resolve, "base+99")
    assert msg == "cannot go base+99 from 'base': only 4 revisions above it"
    assert raises(GraphError, G.resolve, "base-1") == "cannot go base-1: nothing is below base"
    msg = raises(GraphError, g(*TWO_BASES).resolve, "base+1")
    assert "several bases (a1, n1)" in msg and "`a1@base+1`" in msg
    assert g(*TWO_BASES).resolve("a1@base+1") == ("a1",)


def test_is_relative():
    for t in ("current", "+1", "-2", "xb@-1", "xb@+3", " -1 "):
        assert RevisionGraph.is_relative(t), t
    for t in ("head", "base", "base+1", "head-1", "xb@base", "xb@head-1", "abcd", "abcd-1", "xb@base+2"):
        assert not RevisionGraph.is_relative(t), t


# -- Alembic's own traversal cases (tests/test_version_traversal.py) -----------------------------

BRANCHED = ("a", "b:a", "c1:b@c1branch", "d1:c1", "c2:b@c2branch", "d2:c2")
KABOOM = ("a1", "a2", "a3", "amerge:a1,a2,a3", "b1", "b2", "bmerge:b1,b2",
          "c1", "c2", "c3", "cmerge:c1,c2,c3", "d1~a3,b2,c1")

# (graph, current heads, target, removed, heads after). dyn's heads are structural: a revision
# that another head depends on stays a head (Alembic leaves it out); the applied set is the same.
ALEMBIC_DOWNGRADES = {
    "issue 13: y2 depends on x1": (("x1", "x2:x1", "y1", "y2:y1~x1"), ("x2", "y2"), "x1", {"x2"}, ("x1", "y2")),
    "DependsOnBranchTestOne": (("a1@lib1", "b1:a1", "c1:b1", "a2", "b2:a2", "c2:b2~c1", "d1:c1", "e1:d1", "f1:e1"),
                               ("c2", "d1"), "c1", {"d1"}, ("c1", "c2")),
    "DependsOnBranchTestThree (crisscross)": (("a1", "a2:a1", "b1", "b2:b1~a2", "b3:b2", "a3:a2~b1"),
                                              ("a3", "b2"), "b1", {"b2"}, ("b1", "a3")),
    "DependsOnBranchTestFive (merge whose parent is the target)": (
        ("a1", "b1~a1", "bmerge:a1,b1"), ("bmerge",), "a1", {"bmerge"}, ("a1", "b1")),
    "DependsOnBranchTestFive (to the other parent)": (
        ("a1", "b1~a1", "bmerge:a1,b1"), ("bmerge",), "b1", {"bmerge"}, ("a1", "b1")),
    "DependsOnBranchTestTwo (kaboom)": (KABOOM, ("amerge", "bmerge", "cmerge", "d1"), "b2", {"bmerge"},
                                        ("amerge", "b1", "b2", "cmerge", "d1")),
    "DependsOnBranchTestTwo (d1@base)": (KABOOM, ("amerge", "d1", "b1", "cmerge"), "d1@base", {"d1"},
                                         ("amerge", "b1", "b2", "cmerge")),
    "DependsOnBranchTestFour": (("a1", "a2:a1", "a3:a2", "b1", "b2:b1~a3", "b3:b2", "b4:b3~a3"),
                                ("b4",), "b3", {"b4"}, ("a3", "b3")),
    "DependsOnOwnDownrevTest": (("a1", "a2:a1~a1"), ("a2",), "a1", {"a2"}, ("a1",)),
    "BranchFromMergepointTest": (("a1", "b1:a1", "c1:b1", "a2", "b2:a2", "c2:b2", "d1:c1,c2", "d2:c2"),
                                 ("d2", "d1"), "b1", {"c1", "d1"}, ("b1", "d2")),
    "test_relative_downgrade_baseplus2": (BRANCHED, ("d2", "d1"), "base+2", {"c1", "d1", "c2", "d2"}, ("b",)),
    "test_relative_downgrade_branchplus2": (BRANCHED, ("d2", "d1"), "c2branch@base+2", {"c2", "d2"}, ("d1",)),
    "test_relative_downgrade_branchplus3": (BRANCHED, ("d2", "d1"), "c2branch@base+3", {"d2"}, ("d1", "c2")),
    "test_downgrade_once_order_left_unbalanced_labelled": (BRANCHED, ("d1", "d2"), "c1branch@-1", {"d1"},
                                                           ("c1", "d2")),
    "test_downgrade_relative_order_right": (BRANCHED, ("d2", "c1"), "d2-1", {"d2"}, ("c1", "c2")),
    "test_downgrade_single_branch_c1branch": (BRANCHED, ("c1", "d2"), "c1branch@b", {"c1"}, ("d2",)),
    "test_downgrade_single_branch_c1branch_from_d1_head": (BRANCHED, ("c1", "d2"), "c2branch@b", {"c2", "d2"},
                                                           ("c1",)),
    "test_downgrade_single_branch_c2": (BRANCHED, ("d1", "d2"), "c2@b", {"c2", "d2"}, ("d1",)),
    "test_downgrade_single_branch_d1": (BRANCHED, ("d1", "d2"), "d1@b", {"c1", "d1"}, ("d2",)),
    "test_downgrade_relative_to_branch_head": (BRANCHED, ("d1", "d2"), "c1branch@head-1", {"d1"}, ("c1", "d2")),
    "test_downgrade_no_effect_branched": (BRANCHED, ("d1", "c2"), "c2", set(), ("d1", "c2")),
    "test_downgrade_multiple_branch": (BRANCHED, ("d1", "d2"), "a", {"b", "c1", "d1", "c2", "d2"}, ("a",)),
}


@pytest.mark.parametrize("case", list(ALEMBIC_DOWNGRADES))
def test_downgrade_agrees_with_alembic(case):
    specs, current, target, gone, heads = ALEMBIC_DOWNGRADES[case]
    assert removed(g(*specs), current, target) == (gone, heads)


ALEMBIC_UPGRADES = {
    "test_relative_upgrade": (BRANCHED, ("b",), "c2branch@head-1", {"c2"}, ("c2",)),
    "test_upgrade_other_branch_from_mergepoint": (BRANCHED, ("c1",), "c2branch@+1", {"c2"}, ("c1", "c2")),
    "test_upgrade_one_branch_of_heads": (BRANCHED, ("c1", "c2"), "c2branch@+1", {"d2"}, ("c1", "d2")),
    "test_upgrade_from_base": (BRANCHED, (), "base+1", {"a"}, ("a",)),
    "test_upgrade_single_branch": (BRANCHED, ("b",), "d1", {"c1", "d1"}, ("d1",)),
    "BranchFromMergepointTest": (("a1", "b1:a1", "c1:b1", "a2", "b2:a2", "c2:b2", "d1:c1,c2", "d2:c2"),
                                 ("d2", "b1"), "d1", {"c1", "d1"}, ("d1", "d2")),
}


@pytest.mark.parametrize("case", list(ALEMBIC_UPGRADES))
def test_upgrade_agrees_with_alembic(case):
    specs, current, target, new, heads = ALEMBIC_UPGRADES[case]
    assert applied(g(*specs), current, target) == (new, heads)


def test_ambiguous_relative_upgrade_is_refused_like_alembic():
    msg = raises(GraphError, g(*BRANCHED).resolve, "+1", ["c1", "c2"])
    assert "several heads (c1, c2)" in msg and "`c1branch@+1` or `c2branch@+1`" in msg


# -- stamp ---------------------------------------------------------------------------------------


def test_stamp_heads():
    G = g(*FORK)
    assert G.stamp_heads(["x3", "y2"], ("x1",)) == ("x1",)  # a plain target is the new state
    assert G.stamp_heads(["x3", "y2"], ("r",), branch="xb") == ("y2",)
    assert G.stamp_heads(["x3", "y2"], ("x1",), branch="xb") == ("x1", "y2")
    assert G.stamp_heads(["x3"], ("y2",), branch="yb") == ("x3", "y2")
    assert G.stamp_heads([], ("y2",), branch="yb") == ("y2",)
    msg = raises(GraphError, G.stamp_heads, ["x3", "y2"], (), branch="xb")
    assert "going to base would also remove r, y1, y2" in msg


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
    # yb@-2 is r, yb's branch point: yb goes, xb stays
    assert removed(G, ("x3", "y2"), "yb@-2") == ({"y1", "y2"}, ("x3",))
    # one further is base: that would take xb down too, refused
    t = G.resolve_target("yb@-3", ("x3", "y2"))
    assert "r, x1, x2, x3" in raises(GraphError, G.downgrade_plan, ("x3", "y2"), t.revisions, branch=t.branch)


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
    assert h("current", "head", current=["y2"]) == ["m", "y2"]
    raises(UnknownRevision, G.history, "zzzz")


def test_history_of_one_branch():
    G = g(*FORK, "m:x3,y2")
    h = lambda *a, **k: [r.revision for r in G.history(*a, **k)]  # noqa: E731
    assert h("xb@base", "heads") == ["m", "x3", "x2", "x1", "r"]
    assert h("x2@base", "heads") == h("xb@base", "heads")  # a revision names its branch
    assert h("xb@x2", "heads") == ["m", "x3", "x2"]
    assert h("base", "xb@x3") == ["x3", "x2", "x1", "r"]
    G2 = g(*TWO_BASES)
    assert [r.revision for r in G2.history("net@base", "heads")] == ["n3", "n2", "n1"]
    assert [r.revision for r in G2.history("main@base", "heads")] == ["a2", "a1"]


def test_history_relative_ranges_count_from_current():
    G = g(*FORK)
    h = lambda *a, **k: [r.revision for r in G.history(*a, **k)]  # noqa: E731
    assert h("xb@-2", "heads", current=["x3", "y2"]) == ["x3", "x2", "x1"]
    assert h("yb@-1", "yb@head", current=["x3", "y2"]) == ["y2", "y1"]
    assert h("-1", "heads", current=["x2"]) == ["x3", "x2", "x1"]
    assert "no revision of branch 'xb' is applied" in raises(GraphError, G.history, "xb@-2", "heads")


def test_history_inverted_or_empty_range_is_refused():
    G = g(*FORK)
    msg = raises(GraphError, G.history, "x3", "x1")
    assert msg == "history range 'x3:x1' is inverted: x1 is below x3; put the older one first: `dyn history -r x1:x3`"
    assert [r.revision for r in G.history("x1", "x3")] == ["x3", "x2", "x1"]  # the advice works
    assert "`dyn history -r base:r`" in raises(GraphError, G.history, "r", "base")
    msg = raises(GraphError, G.history, "x1", "y2")
    assert msg == (
        "history range 'x1:y2' is empty: y2 is not above x1 (they are on different branches):"
        " run `dyn history` to see every revision"
    )
    assert [r.revision for r in G.history("x2", "x2")] == ["x2"]


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
