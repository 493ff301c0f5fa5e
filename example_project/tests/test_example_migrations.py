"""The example project's revision chain: the ready-made checks, then one data check per
situation of the reference text (each revision upgrades, delivers its access pattern, and
downgrades back to the table it started from)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from boto3.dynamodb.conditions import Attr

from dynamic.testing import (  # noqa: F401  (imported tests run here)
    check_data,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import socialnetwork  # noqa: E402  (the example's own create/seed/query code)

pytestmark = pytest.mark.local

# dyn_project (from dynamic.testing) is a fresh, uniquely named copy of the SocialNetwork table
# on DynamoDB Local, at base, with the revisions of ../migrations (dyn_config finds ../dyn.toml
# by itself) and the items below in it. These fixture overrides would usually live in a
# conftest.py; they are here because this repository's own tests/ imports from *its* conftest.


@pytest.fixture
def dyn_seed_items():
    """The table as it was before any migration: users, posts, organizations, repos, issues, PRs."""
    return socialnetwork.sample_items(users=4, posts_per_user=2)

ATTR_BIO = "a1b2c3d4e5f6"
PROJECTS = "b2c3d4e5f6a7"
MEMBERS = "c3d4e5f6a7b8"
MERGE = "d4e5f6a7b8c9"
GSI1 = "e5f6a7b8c9d0"
GSI2 = "f6a7b8c9d0e1"


def test_chain_shape(dyn_project):
    """One branch (projects / members) and its merge, so `dyn history` shows a merge point."""
    g = dyn_project.graph
    assert g.heads == (GSI2,)
    assert g.branch_points == (ATTR_BIO,)
    assert g.merge_points == (MERGE,)
    assert set(g.branch_labels) == {"projects", "members"}


def unchanged(seed):
    """A verify function: the table holds exactly the seed items."""
    expected = sorted(seed, key=lambda i: (i["PK"], i["SK"]))

    def verify(p):
        assert p.items() == expected

    return verify


def test_situation1_new_attribute_is_lazy(dyn_project, dyn_seed_items):
    """(1) a new attribute on an existing entity: the revision rewrites nothing."""
    result = check_data(dyn_project, ATTR_BIO, verify=unchanged(dyn_seed_items),
                        verify_downgrade=unchanged(dyn_seed_items))
    assert [s.revision for s in result.steps] == [ATTR_BIO]
    assert dyn_project.current() == ()


def test_situation2_projects_in_their_own_collection(dyn_project, dyn_seed_items):
    """(2) a new entity without relations: Projects of an organization, one Query on PROJECTS#<org>."""

    def verify(p):
        projects = socialnetwork.projects_of(p.table, "acme")
        assert sorted(i["SK"] for i in projects) == ["PROJECT#magnet", "PROJECT#rocket"]
        assert {i["Type"] for i in projects} == {"Project"}
        others = [i for i in p.items() if i["Type"] != "Project"]
        assert others == sorted(dyn_seed_items, key=lambda i: (i["PK"], i["SK"]))  # nothing else changed

    def verify_down(p):
        assert p.items(Attr("Type").eq("Project")) == []
        assert socialnetwork.projects_of(p.table, "acme") == []

    check_data(dyn_project, PROJECTS, verify=verify, verify_downgrade=verify_down)


def test_situation3_members_join_the_org_collection(dyn_project, dyn_seed_items):
    """(3) a new entity into an existing item collection: one Query gets an org and its members."""

    def verify(p):
        items = socialnetwork.org_with_members(p.table, "acme")
        assert [(i["Type"], i["SK"]) for i in items] == [
            ("Membership", "MEMBER#alice"), ("Membership", "MEMBER#bob"), ("Organization", "ORG#acme")]
        assert {i["User"]: i["Role"] for i in items if i["Type"] == "Membership"} == {"alice": "owner", "bob": "member"}

    def verify_down(p):
        assert [i["Type"] for i in socialnetwork.org_with_members(p.table, "acme")] == ["Organization"]

    check_data(dyn_project, MEMBERS, verify=verify, verify_downgrade=verify_down)


def test_merge_changes_nothing(dyn_project, dyn_seed_items):
    def verify(p):
        assert p.current() == (MERGE,)

    check_data(dyn_project, MERGE, verify=verify)
    # the merge's parents brought their own items; the merge itself wrote nothing new
    assert len(dyn_project.items()) == len(dyn_seed_items) + 3 + 3


def test_situation4_comments_with_their_post_on_gsi1(dyn_project, dyn_seed_items):
    """(4) a new entity into a new item collection: GSI1, GSI keys backfilled onto every Post."""
    posts = [i for i in dyn_seed_items if i["Type"] == "Post"]
    assert posts  # the check below means nothing on a table without posts

    def verify(p):
        assert "GSI1" in p.index_names()
        for post in p.items(Attr("Type").eq("Post")):
            assert post["GSI1PK"] == post["GSI1SK"] == f"POST#{post['PostId']}"
        items = socialnetwork.post_with_comments(p.table, "p1")
        assert [i["Type"] for i in items] == ["Comment", "Comment", "Post"]
        assert [i["Text"] for i in items[:2]] == ["Great post!", "Agreed."]
        assert items[2]["PostId"] == "p1" and items[2]["PK"] == "USER#alice"
        assert len(p.items(Attr("Type").eq("Post"))) == len(posts)

    def verify_down(p):
        assert "GSI1" not in p.index_names()
        assert p.items(Attr("GSI1PK").exists()) == []
        assert p.items(Attr("Type").eq("Comment")) == []

    result = check_data(dyn_project, GSI1, verify=verify, verify_downgrade=verify_down)
    backfill = [o for o in result.steps[0].ops if o["op"] == "backfill"]
    assert backfill and backfill[0]["counts"]["updated"] == len(posts)


def test_situation5_issues_and_prs_join_their_repo_on_gsi2(dyn_project, dyn_seed_items):
    """(5) joining existing items into a new item collection: Repo, Issues and PRs on GSI2."""
    kinds = ("Repo", "Issue", "PullRequest")
    joined = [i for i in dyn_seed_items if i["Type"] in kinds]

    def verify(p):
        assert "GSI2" in p.index_names()
        items = socialnetwork.repo_with_issues_and_prs(p.table, "acme/rockets")
        assert [i["Type"] for i in items] == ["Repo", "Issue", "Issue", "Issue", "PullRequest", "PullRequest"]
        assert [int(i["Number"]) for i in items[1:]] == [1, 2, 3, 4, 5]  # the repo, its issues, its PRs
        assert all(i["Repo"] == "acme/rockets" for i in items)
        assert len(p.items(Attr("GSI2PK").exists())) == len(joined)  # every one joined, no new item

    def verify_down(p):
        assert "GSI2" not in p.index_names()
        assert p.items(Attr("GSI2PK").exists()) == []

    check_data(dyn_project, GSI2, verify=verify, verify_downgrade=verify_down)


def test_head_serves_every_access_pattern(dyn_project):
    """The example's own query script, at head: every access pattern returns items."""
    import io

    dyn_project.upgrade("head")
    out = io.StringIO()
    results = socialnetwork.run_queries(dyn_project.table_name, out=out, dynamodb=dyn_project.resource)
    assert all(results.values()), out.getvalue()
    assert "post p1 and its comments (GSI1): 3 item(s)" in out.getvalue()
