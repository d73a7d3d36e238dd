"""One download cache shared by concurrent runs: packed objects go only when no run needs them."""

import hashlib

from stages.net.sharing import CacheUsers


def put(root, data: bytes):
    digest = hashlib.sha256(data).hexdigest()
    path = root / "objects" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_objects_are_deleted_only_by_the_caches_sole_user(tmp_path):
    a, b = CacheUsers(tmp_path), CacheUsers(tmp_path)  # two runs (two open lock files)
    mine, theirs = put(tmp_path, b"packed by a"), put(tmp_path, b"packed by b")
    # b still runs: a's objects stay (b may read them), listed for later.
    assert a.release([mine]) == 0
    assert mine.exists()
    assert len(list((tmp_path / "released").iterdir())) == 1
    a.close()
    # b is alone now: its objects and those a listed go, and the list with them.
    assert b.release([theirs]) == 2
    assert not mine.exists() and not theirs.exists()
    assert not list((tmp_path / "released").iterdir())
    # b still holds its shared lock after releasing: a new run waits for nothing but it.
    c = CacheUsers(tmp_path)
    kept = put(tmp_path, b"packed by c")
    assert c.release([kept]) == 0 and kept.exists()
    b.close()
    assert c.release([]) == 1 and not kept.exists()
    c.close()


def test_a_release_list_never_deletes_outside_the_objects(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (tmp_path / "cache" / "released").mkdir(parents=True)
    (tmp_path / "cache" / "released" / "x.txt").write_text(f"{outside}\n")
    users = CacheUsers(tmp_path / "cache")
    assert users.release([]) == 0
    users.close()
    assert outside.read_text() == "keep"


def test_two_runs_releasing_at_once_leave_nothing_listed_once_both_close(tmp_path):
    a, b = CacheUsers(tmp_path), CacheUsers(tmp_path)
    first, second = put(tmp_path, b"a's"), put(tmp_path, b"b's")
    assert a.release([first]) == 0 and b.release([second]) == 0  # each sees the other
    a.close()  # b still runs: nothing goes
    assert first.exists() and second.exists()
    b.close()  # the last user sweeps both lists
    assert not first.exists() and not second.exists()
    assert not list((tmp_path / "released").iterdir())
