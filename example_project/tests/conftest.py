"""The example project's migration tests run through dyn's pytest plugin (dynamic.testing).

`dyn_project` is a fresh, uniquely named copy of the SocialNetwork table on DynamoDB Local
(started once per session), at base, with the revisions of ../migrations and the seed data
below already in it. dyn_config finds ../dyn.toml by itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import socialnetwork  # noqa: E402  (the example's own create/seed/query code)


@pytest.fixture
def dyn_seed_items():
    """The table as it was before any migration: users, posts, organizations, repos, issues, PRs."""
    return socialnetwork.sample_items(users=4, posts_per_user=2)
