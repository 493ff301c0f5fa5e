"""The commands that need no table: init, revision, heads, history, show, merge, branches —
through typer's CliRunner, and the bad inputs that must give one line and a non-zero exit."""
import json
import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynamic.cli import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in list(os.environ):
        if k.startswith("DYN_"):
            monkeypatch.delenv(k)
    # `history` probes the configured table: keep that probe on this machine, refused at once
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    r = runner.invoke(app, ["init", "migrations", "--table", "T1x"])
    assert r.exit_code == 0, r.output
    return tmp_path


def dyn(*args):
    return runner.invoke(app, list(args))


def one_error_line(r, code=None):
    assert r.exit_code != 0
    if code is not None:
        assert r.exit_code == code, r.output
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


def write_rev(dir: Path, rev, down=None, body="pass", extra=""):
    p = dir / "migrations" / "versions" / f"{rev}_x.py"
    p.write_text(textwrap.dedent(f'''\
        """rev {rev}"""
        revision = {rev!r}
        down_revision = {down!r}
        {extra}
        def upgrade(op):
            {body}
        def downgrade(op):
            pass
        '''))
    return p


def test_init_writes_config_and_template(project):
    assert (project / "dyn.toml").read_text().count('table = "T1x"') == 1
    assert (project / "migrations" / "versions").is_dir()
    assert (project / "migrations" / "revision.py.j2").is_file()


def test_init_refuses_to_overwrite(project):
    line = one_error_line(dyn("init", "migrations", "--table", "T1x"), 2)
    assert "already" in line


def test_two_revisions_make_a_chain(project):
    r1 = dyn("revision", "-m", "first one")
    assert r1.exit_code == 0, r1.output
    r2 = dyn("revision", "-m", "second one")
    assert r2.exit_code == 0, r2.output
    heads = json.loads(dyn("heads", "--json").stdout)
    assert len(heads) == 1 and heads[0]["doc"] == "second one"
    hist = json.loads(dyn("history", "--json").stdout)
    assert [h["doc"] for h in hist] == ["second one", "first one"]
    assert hist[0]["down_revision"] == [hist[1]["revision"]]
    text = dyn("history").stdout
    assert "(head)" in text.splitlines()[0]


def test_revision_file_content(project):
    r = dyn("revision", "-m", "Add GSI1!", "--rev-id", "abc123", "--branch-label", "feat")
    assert r.exit_code == 0, r.output
    f = project / "migrations" / "versions" / "abc123_add_gsi1.py"
    text = f.read_text()
    assert 'revision = \'abc123\'' in text and "down_revision = None" in text
    assert "branch_labels = 'feat'" in text and "def upgrade(op):" in text and "Create Date:" in text


def test_user_template_is_used(project):
    tpl = project / "migrations" / "revision.py.j2"
    tpl.write_text(tpl.read_text().replace("def upgrade(op):", "# custom template\ndef upgrade(op):"))
    r = dyn("revision", "-m", "x", "--rev-id", "r1")
    assert r.exit_code == 0
    assert "# custom template" in next((project / "migrations" / "versions").glob("r1_*.py")).read_text()


@pytest.mark.parametrize("bad", ["a-b", "a@b", "a+b", "a:b", "a b"])
def test_bad_rev_ids(project, bad):
    one_error_line(dyn("revision", "-m", "x", "--rev-id", bad))
    assert not list((project / "migrations" / "versions").glob("*.py"))


def test_show_and_merge(project):
    write_rev(project, "aaaa1")
    write_rev(project, "bbbb2", "aaaa1")
    write_rev(project, "cccc3", "aaaa1")
    line = one_error_line(dyn("revision", "-m", "more"))
    assert "multiple heads" in line and "merge" in line
    r = dyn("merge", "heads", "-m", "join", "--rev-id", "mmmm4")
    assert r.exit_code == 0, r.output
    heads = json.loads(dyn("heads", "--json").stdout)
    assert [h["revision"] for h in heads] == ["mmmm4"]
    assert heads[0]["is_merge_point"]
    shown = json.loads(dyn("show", "aaaa", "--json").stdout)
    assert shown["is_branch_point"] and shown["children"] == ["bbbb2", "cccc3"]
    text = dyn("history").stdout
    assert "(mergepoint)" in text and "(branchpoint)" in text
    assert json.loads(dyn("branches", "--json").stdout)[0]["revision"] == "aaaa1"


def test_history_range(project):
    write_rev(project, "aaaa1")
    write_rev(project, "bbbb2", "aaaa1")
    write_rev(project, "cccc3", "bbbb2")
    hist = json.loads(dyn("history", "-r", "bbbb2:cccc3", "--json").stdout)
    assert [h["revision"] for h in hist] == ["cccc3", "bbbb2"]


def test_syntax_error_names_file_and_line(project):
    p = write_rev(project, "aaaa1", body="x = (")
    line = one_error_line(dyn("heads"))
    assert p.name in line and ":6:" in line and "syntax error" in line


def test_import_error_names_file_and_line(project):
    write_rev(project, "aaaa1", extra="import no_such_module_here")
    line = one_error_line(dyn("history"))
    assert "aaaa1_x.py:4" in line and "ModuleNotFoundError" in line


def test_missing_revision_attribute(project):
    (project / "migrations" / "versions" / "x.py").write_text("def upgrade(op): pass\ndef downgrade(op): pass\n")
    assert "missing `revision" in one_error_line(dyn("heads"))


def test_missing_upgrade(project):
    (project / "migrations" / "versions" / "x.py").write_text("revision = 'abcd1'\ndown_revision = None\n")
    assert "def upgrade" in one_error_line(dyn("heads"))


def test_duplicate_ids_name_both_files(project):
    write_rev(project, "aaaa1")
    (project / "migrations" / "versions" / "copy.py").write_text(
        (project / "migrations" / "versions" / "aaaa1_x.py").read_text())
    line = one_error_line(dyn("heads"))
    assert "aaaa1_x.py" in line and "copy.py" in line


def test_missing_parent(project):
    write_rev(project, "aaaa1", "nope99")
    line = one_error_line(dyn("heads"))
    assert "nope99" in line


def test_cycle(project):
    write_rev(project, "aaaa1", "bbbb2")
    write_rev(project, "bbbb2", "aaaa1")
    line = one_error_line(dyn("history"))
    assert "cycle" in line and "aaaa1" in line and "bbbb2" in line


def test_unknown_show_target(project):
    write_rev(project, "aaaa1")
    assert "zzzz" in one_error_line(dyn("show", "zzzz"))


def test_no_migrations_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(dyn("heads"))
    assert "dyn init" in line


def test_bad_config_key_is_usage_error(project):
    (project / "dyn.toml").write_text('[dyn]\ntable = "T1x"\nbogus = 1\n')
    assert "bogus" in one_error_line(dyn("heads"), 2)


def test_debug_shows_traceback(project):
    write_rev(project, "aaaa1", body="x = (")
    r = dyn("--debug", "heads")
    assert r.exit_code == 1 and "Traceback" in r.stderr


def test_a_revision_id_that_is_not_a_string_is_named(project):
    write_rev(project, 5)
    line = one_error_line(dyn("heads"))
    assert "revision = 5 must be a string" in line and 'revision = "5"' in line, line


def test_a_merge_of_a_revision_and_its_own_descendant_is_refused(project):
    write_rev(project, "aaaa1")
    write_rev(project, "bbbb2", "aaaa1")
    write_rev(project, "cccc3", "bbbb2")
    line = one_error_line(dyn("merge", "-m", "m", "aaaa1", "cccc3"), code=2)
    assert "aaaa1 is already below cccc3" in line and "`dyn heads`" in line, line
    assert len(list((project / "migrations" / "versions").glob("*.py"))) == 3  # nothing written
    assert [h["revision"] for h in json.loads(dyn("heads", "--json").stdout)] == ["cccc3"]


def test_heads_joined_only_by_depends_on_can_be_merged(project):
    """b1 depends on a1 but sits on a line of its own: `dyn heads` lists both, the advice says
    `dyn merge heads`, and the merge must be allowed."""
    write_rev(project, "aaaa1")
    write_rev(project, "bbbb1", extra="depends_on = 'aaaa1'")
    assert "dyn merge heads" in one_error_line(dyn("revision", "-m", "next"))
    r = dyn("merge", "-m", "join", "heads", "--rev-id", "mmmm1")
    assert r.exit_code == 0, r.output
    assert [h["revision"] for h in json.loads(dyn("heads", "--json").stdout)] == ["mmmm1"]
