"""records.py without a training run: atomic writes, temp clean-up, locks, migration, completeness, the table."""

from __future__ import annotations

import fcntl
import json
import os
import stat

import pandas as pd
import pytest

from peftbench import records


def test_atomic_write_publishes_with_a_plain_files_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "file.json"
    records.atomic_write_text(target, "one")
    records.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):  # BaseException too: Ctrl-C in the middle of a write
        with records.replacing(target) as tmp:
            assert os.path.basename(tmp).startswith(".table.csv.") and tmp.endswith(records.TEMP_SUFFIX)
            open(tmp, "w").write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_remove_stale_temps_by_prefix(tmp_path):
    (tmp_path / ".record.json.x1.tmp").write_text("")
    (tmp_path / ".adapter.123.tmp").mkdir()
    (tmp_path / ".adapter.123.tmp" / "w.safetensors").write_text("")
    (tmp_path / ".table.csv.y2.tmp").write_text("")
    (tmp_path / "keep.tmp").write_text("")  # not hidden: not one of ours
    (tmp_path / ".keep.json").write_text("")  # not a temp
    removed = records.remove_stale_temps(tmp_path, ".table.")
    assert [p.name for p in removed] == [".table.csv.y2.tmp"]
    removed = sorted(p.name for p in records.remove_stale_temps(tmp_path))
    assert removed == [".adapter.123.tmp", ".record.json.x1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.json", "keep.tmp"]


def test_sync_tree_and_fsync_dir_on_real_folders(tmp_path):
    records.sync_tree(tmp_path / "missing")  # nothing to sync is not an error
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    records.sync_tree(tmp_path / "a")
    records.fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        records.fsync_dir(tmp_path / "a" / "b" / "f")


def test_locked_is_exclusive_and_released(tmp_path):
    folder = tmp_path / "new"
    with records.locked(folder):
        assert (folder / ".lock").exists()
        with open(folder / ".lock") as other:  # flock is per open file: a second open conflicts, even here
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(folder / ".lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with records.locked(folder, ".other.lock"):
        assert (folder / ".other.lock").exists()


def test_point_lock_cleans_the_points_temps_while_held(tmp_path):
    run_dir = tmp_path / "lora-x"
    run_dir.mkdir()
    (run_dir / ".record.json.ab.tmp").write_text("{")
    (run_dir / "record.json").write_text("{}")
    with records.point_lock(tmp_path, "lora-x") as held:
        assert held == run_dir
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "record.json"]
        with open(run_dir / ".lock") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_write_record_adds_the_schema_version_first_scrubs_and_rebuilds(tmp_path):
    path = records.write_record(
        tmp_path, {"run_id": "r1", "status": "ok", "schema_version": 0, "hub_token": "abc"}, rebuild=False
    )
    assert path == tmp_path / "r1" / "record.json"
    text = path.read_text()
    assert list(json.loads(text)) == ["schema_version", "run_id", "status", "hub_token"]
    assert json.loads(text) == {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": "r1",
        "status": "ok",
        "hub_token": "***",
    }
    assert text.startswith('{\n  "schema_version": 1,\n  "run_id": "r1"')  # indented JSON, keys in record order
    assert not (tmp_path / "table.parquet").exists()
    records.write_record(tmp_path, {"run_id": "r2", "status": "failed", "when": pd.Timestamp("2026-01-01")})
    assert json.loads((tmp_path / "r2" / "record.json").read_text())["when"] == "2026-01-01 00:00:00"  # default=str
    table = records.read_table(tmp_path)
    assert table["run_id"].tolist() == ["r1", "r2"] and table["status"].tolist() == ["ok", "failed"]
    assert pd.read_csv(tmp_path / "table.csv")["run_id"].tolist() == ["r1", "r2"]


def test_write_table_cleans_only_table_temps_and_matches_csv(tmp_path):
    records.write_record(tmp_path, {"run_id": "a", "status": "ok", "tokens_per_s": 5.0}, rebuild=False)
    (tmp_path / ".table.parquet.zz.tmp").write_text("junk")
    (tmp_path / "a" / ".record.json.q.tmp").write_text("junk")  # a point's temp: its own lock cleans it
    (tmp_path / ".report.md.r.tmp").write_text("junk")  # not the table's: another writer's
    frame = records.write_table(tmp_path)
    assert frame["tokens_per_s"].tolist() == [5.0]
    assert not (tmp_path / ".table.parquet.zz.tmp").exists() and (tmp_path / "a" / ".record.json.q.tmp").exists()
    assert (tmp_path / ".report.md.r.tmp").exists()
    assert records.read_table(tmp_path).equals(frame)
    assert pd.read_csv(tmp_path / "table.csv").columns.tolist() == frame.columns.tolist()


def test_to_frame_columns_and_flattening():
    frame = records.to_frame(
        [
            {
                "zeta": 1,
                "run_id": "r",
                "status": "ok",
                "method": "lora",
                "adapter_bytes": 2_500_000,
                "scores": {"topics/acc": 0.5, "nested": {"x": 1}},
                "versions": {"torch": "2.13"},
                "hyperparameters": {"lr": 1e-4, "list": [1]},
                "config": {"a": 1},
                "loss_curve": [1.0, 0.5],
            },
            {"run_id": "s", "status": "oom", "method": "full"},
        ]
    )
    assert frame.columns.tolist() == [
        "run_id",
        "status",
        "method",
        "adapter_mb",
        "adapter_bytes",
        "hyperparameters.lr",
        "scores.topics/acc",
        "versions.torch",
        "zeta",
    ]
    assert frame["adapter_mb"].iloc[0] == 2.5 and pd.isna(frame["adapter_mb"].iloc[1])
    assert frame["scores.topics/acc"].iloc[0] == 0.5
    assert records.to_frame([{"run_id": "a", "adapter_bytes": None}]).columns.tolist() == ["run_id", "adapter_bytes"]
    assert records.LEAD_COLUMNS[:3] == ["run_id", "status", "method"]


def test_migrate_versions(tmp_path):
    assert records.migrate({"run_id": "a"}, "p") == {"run_id": "a", "status": "ok", "schema_version": 1}
    assert records.migrate({"run_id": "a", "status": "failed"}, "p")["status"] == "failed"  # v0 kept its status
    current = {"run_id": "a", "schema_version": 1, "status": "oom"}
    assert records.migrate(current, "p") is current
    with pytest.raises(records.RecordVersionError) as newer:
        records.migrate({"run_id": "a", "schema_version": 2}, "x/record.json")
    assert str(newer.value) == (
        "x/record.json: record schema version 2 was written by a newer peftbench; this one "
        "reads versions 0..1. Upgrade peftbench to read it."
    )
    with pytest.raises(records.RecordVersionError) as unknown:
        records.migrate({"run_id": "a", "schema_version": -3}, "x/record.json")
    assert str(unknown.value).startswith("x/record.json: record schema version -3, this peftbench reads version 1 and")
    for bad in ([1], "text", {"status": "ok"}):
        with pytest.raises(records.RecordVersionError, match="x: not a peftbench record"):
            records.migrate(bad, "x")


def test_finished_and_completed_records(tmp_path):
    assert records.finished_record(tmp_path, "r") is None and records.completed_record(tmp_path, "r") is None
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "record.json").write_text(json.dumps({"run_id": "r", "status": "failed"}))
    assert records.finished_record(tmp_path, "r") == {"run_id": "r", "status": "failed", "schema_version": 1}
    assert records.completed_record(tmp_path, "r") is None
    (tmp_path / "r" / "record.json").write_text(json.dumps({"run_id": "r", "adapter_bytes": None}))  # v0: ok
    assert records.completed_record(tmp_path, "r")["status"] == "ok"  # nothing saved: nothing to be missing
    (tmp_path / "r" / "record.json").write_text(json.dumps({"run_id": "r", "status": "ok", "adapter_bytes": 10}))
    assert records.completed_record(tmp_path, "r") is None  # the adapter it measured is gone
    (tmp_path / "r" / "adapter").write_text("a file, not the folder")
    assert records.completed_record(tmp_path, "r") is None
    (tmp_path / "r" / "adapter").unlink()
    (tmp_path / "r" / "adapter").mkdir()
    assert records.completed_record(tmp_path, "r")["adapter_bytes"] == 10


def test_read_records_in_name_order_and_migrated(tmp_path):
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(json.dumps({"run_id": name}))
    (tmp_path / "c").mkdir()  # a folder without a record (a point still running)
    assert [(r["run_id"], r["schema_version"]) for r in records.read_records(tmp_path)] == [("a", 1), ("b", 1)]
    (tmp_path / "c" / "record.json").write_text(json.dumps({"run_id": "c", "schema_version": 9}))
    with pytest.raises(records.RecordVersionError, match=f"^{tmp_path / 'c' / 'record.json'}: record schema version 9"):
        records.read_records(tmp_path)
    with pytest.raises(records.RecordVersionError, match=f"^{tmp_path / 'c' / 'record.json'}: "):
        records.finished_record(tmp_path, "c")


def fsynced_paths(monkeypatch) -> list[str]:
    """Record the path behind every fd records.py fsyncs, in call order."""
    seen: list[str] = []
    real = os.fsync

    def spy(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(records.os, "fsync", spy)
    return seen


def test_sync_tree_fsyncs_every_file_and_folder_children_first_and_no_symlink(tmp_path, monkeypatch):
    outside = tmp_path / "outside.bin"
    outside.write_text("not ours")
    root = tmp_path / "adapter"
    (root / "sub").mkdir(parents=True)
    (root / "a.safetensors").write_text("a")
    (root / "sub" / "b.json").write_text("b")
    (root / "link").symlink_to(outside)
    seen = fsynced_paths(monkeypatch)
    records.sync_tree(root)
    expected = {str(root), str(root / "sub"), str(root / "a.safetensors"), str(root / "sub" / "b.json")}
    assert set(seen) == expected and len(seen) == 4, seen  # the symlink's target is not ours to sync
    assert seen.index(str(root / "sub" / "b.json")) < seen.index(str(root / "sub")) < seen.index(str(root))
    assert seen[-1] == str(root)


def test_atomic_write_fsyncs_the_file_then_its_folder(tmp_path, monkeypatch):
    seen = fsynced_paths(monkeypatch)
    records.atomic_write_text(tmp_path / "r.json", "{}")
    assert len(seen) == 2 and seen[0].startswith(str(tmp_path / ".r.json.")) and seen[1] == str(tmp_path)


def test_write_record_syncs_the_run_folder_before_the_record(tmp_path, monkeypatch):
    (tmp_path / "r" / "adapter").mkdir(parents=True)
    (tmp_path / "r" / "adapter" / "w.safetensors").write_text("w")
    seen = fsynced_paths(monkeypatch)
    records.write_record(tmp_path, {"run_id": "r", "status": "ok"}, rebuild=False)
    weights = seen.index(str(tmp_path / "r" / "adapter" / "w.safetensors"))
    record_temp = next(i for i, p in enumerate(seen) if p.startswith(str(tmp_path / "r" / ".record.json.")))
    assert weights < record_temp


def test_remove_stale_temps_unlinks_a_symlink_without_following_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".adapter.9.tmp").symlink_to(target, target_is_directory=True)
    assert [p.name for p in records.remove_stale_temps(tmp_path / "run")] == [".adapter.9.tmp"]
    assert (target / "keep").exists() and not (tmp_path / "run" / ".adapter.9.tmp").exists()


FAULT_SCRIPT = """
import sys
from pathlib import Path
from peftbench import records
if sys.argv[1] == "sync":
    records.sync_tree(Path(sys.argv[2]))
elif sys.argv[1] == "write":
    records.write_record(Path(sys.argv[2]), {"run_id": "r", "status": "ok"})
else:
    records.fault_point(sys.argv[2])
print("alive")
"""


def run_fault_script(tmp_path, fault: str, *args: str):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), records.FAULT_ENV: fault}
    return subprocess.run(
        [sys.executable, "-c", FAULT_SCRIPT, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )


def test_fault_point_sigkills_at_the_named_phase_only(tmp_path):
    killed = run_fault_script(tmp_path, "before_record", "phase", "before_record")
    assert killed.returncode == -9 and "alive" not in killed.stdout, killed.stderr
    spared = run_fault_script(tmp_path, "before_record", "phase", "between_record_and_table")
    assert spared.returncode == 0 and "alive" in spared.stdout, spared.stderr
    temp_folder = tmp_path / ".adapter.7.tmp"
    temp_folder.mkdir()
    assert run_fault_script(tmp_path, "adapter_save", "sync", str(temp_folder)).returncode == -9
    plain = tmp_path / "adapter"
    plain.mkdir()
    assert run_fault_script(tmp_path, "adapter_save", "sync", str(plain)).returncode == 0
    assert run_fault_script(tmp_path, "between_record_and_table", "write", str(tmp_path / "res")).returncode == -9
    assert (tmp_path / "res" / "r" / "record.json").exists() and not (tmp_path / "res" / "table.csv").exists()


def test_readable_records_names_each_unreadable_one(tmp_path):
    for name, text in (("a", json.dumps({"run_id": "a"})), ("b", '{"run_id": '), ("c", json.dumps({"x": 1}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(text)
    good, problems = records.readable_records(tmp_path)
    assert [r["run_id"] for r in good] == ["a"]
    assert [p.split(":")[0] for p in problems] == [
        str(tmp_path / "b" / "record.json"),
        str(tmp_path / "c" / "record.json"),
    ]
    assert all(": left out of the table, it cannot be read (" in p for p in problems)


def test_tabular_stores_mixed_columns_as_text_and_keeps_plain_ones():
    frame = pd.DataFrame(
        {
            "mixed": [True, "maybe", None],
            "plain": ["x", "y", None],
            "num": [1.0, 2.0, 3.0],
            "objs": [{"a": 1}, None, None],
            "ints": [1, 2, 3],
        }
    )
    out = records.tabular(frame.copy())
    assert out["mixed"].tolist()[:2] == ["True", "maybe"] and pd.isna(out["mixed"].iloc[2])  # missing stays missing
    assert (
        out["plain"].tolist()[:2] == ["x", "y"]
        and pd.isna(out["plain"].iloc[2])
        and out["num"].tolist() == [1.0, 2.0, 3.0]
    )
    assert out["objs"].iloc[0] == "{'a': 1}" and out["objs"].iloc[1:].isna().all()  # a non-scalar kind: text too
    assert out["ints"].tolist() == [1, 2, 3]
    nan = records.tabular(pd.DataFrame({"m": [float("nan"), "s", 1]}))
    assert nan["m"].iloc[0] != nan["m"].iloc[0] and nan["m"].tolist()[1:] == ["s", "1"]  # NaN stays missing


def test_write_table_leaves_out_and_names_what_it_cannot_store(tmp_path, caplog):
    records.write_record(tmp_path, {"run_id": "good", "status": "ok", "flag": True}, rebuild=False)
    records.write_record(tmp_path, {"run_id": "odd", "status": "ok", "flag": "maybe"}, rebuild=False)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "record.json").write_text("{")
    caplog.set_level("ERROR", logger="peftbench")
    frame = records.write_table(tmp_path)
    assert frame["run_id"].tolist() == ["good", "odd"] and frame["flag"].tolist() == ["True", "maybe"]
    (problem,) = frame.attrs["left_out"]
    assert problem.startswith(f"{tmp_path / 'torn' / 'record.json'}: left out of the table")
    assert "left out of the table" in caplog.text and records.read_table(tmp_path)["run_id"].tolist() == ["good", "odd"]
