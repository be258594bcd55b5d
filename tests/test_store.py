"""edge.store: versions, the active pointer, rollback history, pruning, archive checks, and crash safety."""
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from core.errors import Conflict, InvalidInput, NotFound, TooLarge
from edge.store import INCOMING, ModelStore, unpack
from core.package import load_package, write_package


def fake_package(folder, name="m", seed=0):
    """A package whose files are not a real network: the store only moves and hashes files."""
    folder.mkdir(parents=True)
    (folder / f"{name}-symbol.json").write_text(json.dumps({"seed": seed}))
    (folder / f"{name}-0000.params").write_bytes(random.Random(seed).randbytes(1000))
    return write_package(folder, name, ["a", "b"], 300, 300)


def store_with(tmp_path, count, keep=5):
    store = ModelStore(tmp_path / "artifacts" / "models", keep=keep)
    store.recover()
    versions = []
    for i in range(count):
        with store.staging() as staging:
            entry, created = store.add(fake_package(staging / "pkg", seed=i))
        assert created
        versions.append(entry.version)
    return store, versions


def problems(store):
    """What is not whole in a store: unverifiable versions, a dangling pointer, leftovers."""
    found = []
    for entry in store.entries():
        try:
            load_package(entry.folder)
        except Exception as exc:  # noqa: BLE001 - report whatever is wrong
            found.append(str(exc))
    if store.active and store.get(store.active) is None:
        found.append(f"pointer names {store.active}, which is not stored")
    found += [p.name for p in store.root.iterdir() if p.name.startswith((INCOMING, ".deleting-", ".active.json."))]
    return found


def test_switch_remembers_history_and_step_back_pops_it(tmp_path):
    store, (a, b, c) = store_with(tmp_path, 3)
    store.switch(a)
    store.switch(b)
    before = store.switch(c)
    assert before["version"] == b and store.pointer()["previous"] == [b, a] and store.pointer()["trial"]
    store.confirm(c)
    assert not store.pointer()["trial"]
    assert store.rollback_target() == b
    store.mark_bad(b, "threw on frame 1")
    assert store.rollback_target() == a and store.get(b).bad["reason"] == "threw on frame 1"
    store.step_back(a)
    assert store.pointer()["version"] == a and store.pointer()["previous"] == []
    store.restore(before)
    assert store.active == b


def test_re_adding_a_version_keeps_the_stored_one(tmp_path):
    store, (a,) = store_with(tmp_path, 1)
    added = store.get(a).added
    with store.staging() as staging:
        entry, created = store.add(fake_package(staging / "pkg", seed=0))
    assert not created and entry.added == added and len(store.entries()) == 1


def test_delete_refuses_the_active_version(tmp_path):
    store, (a, b) = store_with(tmp_path, 2)
    store.switch(a)
    with pytest.raises(Conflict, match="is the active model"):
        store.delete(a)
    store.delete(b)
    assert [e.version for e in store.entries()] == [a]
    with pytest.raises(NotFound, match="no model version"):
        store.delete(b)


def test_prune_keeps_the_newest_and_always_the_active_and_its_rollback_target(tmp_path):
    store, versions = store_with(tmp_path, 2, keep=2)
    store.switch(versions[0])
    store.switch(versions[1])
    for i in range(2, 5):
        with store.staging() as staging:
            versions.append(store.add(fake_package(staging / "pkg", seed=i))[0].version)
    kept = {e.version for e in store.entries()}
    assert kept == {versions[0], versions[1], versions[4]}  # active, rollback target, newest
    assert not problems(store)


def test_deeplens_style_models_in_the_artifacts_folder_are_left_alone(tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    legacy = {"ssd-symbol.json": b"{}", "ssd-0000.params": b"\0" * 100, "ssd.xml": b"<net/>"}
    for name, data in legacy.items():
        (artifacts / name).write_bytes(data)
    store, versions = store_with(tmp_path, 3, keep=1)
    store.switch(versions[-1])
    store.prune()
    store.recover()
    assert {p.name: p.read_bytes() for p in artifacts.iterdir() if p.is_file()} == legacy


def test_recover_clears_leftovers_and_a_dangling_pointer(tmp_path):
    store, (a,) = store_with(tmp_path, 1)
    store.switch(a)
    (store.root / f"{INCOMING}x" / "package").mkdir(parents=True)
    (store.root / ".deleting-old").mkdir()
    (store.root / ".active.json.abc.tmp").write_text("{")
    assert store.recover()["version"] == a and not problems(store)
    os.rename(store.get(a).folder, tmp_path / "elsewhere")  # someone removed it by hand
    assert store.recover()["version"] is None and not problems(store)


# -- archives ---------------------------------------------------------------------------------
def archive(tmp_path, *members, mode="w:gz"):
    """A .tar.gz of (TarInfo, bytes or None) members."""
    path = tmp_path / "pkg.tar.gz"
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name, kind=tarfile.REGTYPE, data=b"x", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("bad, code", [
    (member("../evil.json"), "unsafe_archive"),
    (member("sub/../../evil.json"), "unsafe_archive"),
    (member("/etc/evil.json"), "unsafe_archive"),
    (member("model.json", tarfile.SYMTYPE, link="/etc/passwd"), "unsafe_archive"),
    (member("m-0000.params", tarfile.LNKTYPE, link="model.json"), "unsafe_archive"),
    (member("dev", tarfile.CHRTYPE), "unsafe_archive"),
    (member("fifo", tarfile.FIFOTYPE), "unsafe_archive"),
    (member("sub", tarfile.DIRTYPE), "bad_archive"),
    (member("sub/model.json"), "bad_archive"),
])
def test_unpack_refuses_unsafe_members_before_writing_anything(tmp_path, bad, code):
    path = archive(tmp_path, member("./model.json", data=b"{}"), bad)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInput) as caught:
        unpack(path, out, limit=1 << 20)
    assert caught.value.code == code
    assert list(out.iterdir()) == [] and not (tmp_path / "evil.json").exists()


def test_unpack_refuses_truncated_archives_and_too_much_data(tmp_path):
    path = archive(tmp_path, member("./model.json", data=os.urandom(50000)))
    out = tmp_path / "out"
    out.mkdir()
    assert unpack(path, out, limit=1 << 20) == ["model.json"]
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        unpack(path, tmp_path, limit=1 << 20)
    path = archive(tmp_path, member("a", data=b"0" * 6000), member("b", data=b"0" * 6000))
    with pytest.raises(TooLarge, match="larger than the device accepts"):
        unpack(path, tmp_path / "out", limit=10000)


def test_unpack_refuses_a_huge_member_name_and_too_many_members_as_bad_archives(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInput, match="member name of 5000 characters; at most 255") as caught:
        unpack(archive(tmp_path, member("a" * 5000)), out, limit=1 << 20)
    assert caught.value.code == "bad_archive" and list(out.iterdir()) == []
    many = archive(tmp_path, *(member(f"f{i}", data=b"") for i in range(5000)))
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="more than 64 files"):
        unpack(many, out, limit=1 << 20)
    assert time.monotonic() - started < 2 and list(out.iterdir()) == []


# -- kill -9 at any instant -------------------------------------------------------------------
CHURN = """
import sys
from edge.store import ModelStore
store = ModelStore(sys.argv[1], keep=3)
versions = sys.argv[2:]
print("ready", flush=True)
i = 0
while True:
    store.switch(versions[i % len(versions)])
    store.confirm(versions[i % len(versions)])
    store.mark_bad(versions[(i + 1) % len(versions)], "churn %d" % i)
    i += 1
"""


def test_kill_9_while_switching_leaves_old_or_new_pointer_and_a_whole_store(tmp_path):
    store, versions = store_with(tmp_path, 3)
    rng = random.Random(0)
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", CHURN, str(store.root), *versions],
                                 stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        pointer = store.recover()
        assert pointer["version"] in versions and not problems(store)
        assert all(e.bad is None or e.bad["reason"].startswith("churn") for e in store.entries())
