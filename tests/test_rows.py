"""Output rows: any file name round-trips, faults leave whole rows and one-line errors, runs do not mix.

None of these need a model: a result is any object with ``as_dict()``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from dgiqa_cli.io.discover import collect_inputs, read_path_list, walk_images
from dgiqa_cli.io.rows import (
    FIELDS,
    CsvWriter,
    JsonlWriter,
    OutputError,
    ResumeError,
    check_resume,
    check_writable,
    completed_paths,
    decode_path,
    drop_partial_last_row,
    encode_path,
    lock_outputs,
    printable,
    read_csv,
    read_jsonl,
)

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {
    "model": "dgiqa-koniq",
    "depth_model": "vits",
    "weights_sha256": "ab" * 32,
    "crops": 3,
    "crop_mode": "official",
    "seed": 42,
    "precision": "fp32",
    "backend": "torch-cpu",
}
OLD_FIELDS = ("path", "score", "width", "height", "crops", "arch", "model", "depth_model", "scale", "error")


@dataclass
class Result:
    """What the writers need of a ScoreResult (importing the real one would import torch)."""

    path: str
    score: float | None
    error: str | None = None
    width: int | None = 640
    height: int | None = 480
    crops: int = 3
    model: str = "dgiqa-koniq"
    depth_model: str | None = "vits"
    arch: str = "dgiqa"
    scale: str = "0 to 1, higher is better"
    decoder: str | None = "opencv"

    def as_dict(self) -> dict:
        return asdict(self)


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, env=env, timeout=60, check=False, **kwargs
    )


# -- 1. paths that are not UTF-8 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/data/photos/a.jpg",
        "/data/été/写真 1.png",
        r"C:\Users\bob\Pictures\x.jpg",
        r"\\server\share\img.jpeg",
        r"C:\xfiles\new\a.jpg",  # \xfi, \n: not escape tokens
        r"C:\u1234\a.png",  # \u1234 is not a surrogate
        r"C:\X5C\UD800.png",  # tokens start with a lower-case x or u
        "=HYPERLINK(1).png",
        "line\nbreak.jpg",
    ],
)
def test_ordinary_paths_are_written_as_they_are(path):
    assert encode_path(path) == path
    assert decode_path(path) == path


@pytest.mark.parametrize(
    ("path", "written"),
    [
        (os.fsdecode(b"/pics/caf\xe9.jpg"), r"/pics/caf\xe9.jpg"),
        (os.fsdecode(b"a\\b\xff.png"), r"a\x5cb\xff.png"),
        (r"C:\xe9\a.jpg", r"C:\x5cxe9\x5ca.jpg"),  # a real folder "xe9" that looks escaped
        (r"C:\x5C.png", r"C:\x5cx5C.png"),
        ("odd\ud800.png", r"odd\ud800.png"),  # a lone surrogate that no byte gives (Windows)
    ],
)
def test_paths_that_need_escaping(path, written):
    assert encode_path(path) == written
    assert decode_path(written) == path


def test_every_byte_name_round_trips():
    rng = random.Random(10)
    alphabet = [b"\\", b"x", b"u", b"d", b"5", b"c", b"e9", b"/", b"a", b".jpg", "é".encode(), b"\xe9", b"\xc3"]
    for _ in range(20000):
        if rng.random() < 0.5:
            name = bytes(rng.choice(range(1, 256)) for _ in range(rng.randint(1, 12)))
        else:
            name = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        path = os.fsdecode(name)
        written = encode_path(path)
        assert written.encode("utf-8").decode("utf-8") == written  # always valid UTF-8
        assert decode_path(written) == path, (name, written)
        assert decode_path(encode_path(written)) == written  # an escaped text is itself a path that round-trips


def test_random_text_round_trips():
    rng = random.Random(11)
    pieces = ["\\", "x", "u", "d", "8", "e", "f", "5", "c", "\udce9", "\ud83d", "é", "/"]
    for _ in range(20000):
        path = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        assert decode_path(encode_path(path)) == path, path


@pytest.fixture
def odd_folder(tmp_path):
    """Pictures whose names are not UTF-8, next to an ordinary one."""
    folder = os.fsencode(tmp_path / "pics")
    os.mkdir(folder)
    names = [b"caf\xe9.jpg", b"\xff\xfe.png", b"back\\slash\xe9.jpg", b"plain.jpg"]
    for name in names:
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(b"x")
    return tmp_path / "pics", sorted(os.fsdecode(os.path.join(folder, n)) for n in names)


def test_discovery_yields_undecodable_names(odd_folder):
    folder, paths = odd_folder
    assert sorted(walk_images(folder)) == paths
    assert collect_inputs([folder]) == sorted(paths)


@pytest.mark.parametrize("writer_class", [CsvWriter, JsonlWriter])
def test_undecodable_names_are_written_read_back_and_resumed(tmp_path, odd_folder, writer_class):
    folder, paths = odd_folder
    out = tmp_path / ("rows.csv" if writer_class is CsvWriter else "rows.jsonl")
    with writer_class(out, settings=SETTINGS) as writer:
        for i, path in enumerate(paths[:3]):
            writer.write(Result(path, 0.25 * i))
    text = out.read_bytes().decode("utf-8")  # valid UTF-8
    if writer_class is CsvWriter:
        cells = [row[0] for row in csv.reader(io.StringIO(text, newline=""))][1:]
    else:
        cells = [json.loads(line)["path"] for line in text.splitlines()]  # what jq -r shows
    assert [os.path.basename(c) for c in cells] == [r"back\x5cslash\xe9.jpg", r"caf\xe9.jpg", "plain.jpg"]
    rows = read_csv(out) if writer_class is CsvWriter else read_jsonl(out)
    assert [r["path"] for r in rows] == paths[:3]
    done = completed_paths(out)
    todo = [p for p in collect_inputs([folder]) if p not in done]
    assert todo == paths[3:]
    with writer_class(out, append=True, settings=SETTINGS) as writer:
        for path in todo:
            writer.write(Result(path, 0.9))
    assert sorted(completed_paths(out)) == paths


def test_path_list_accepts_undecodable_names(tmp_path, odd_folder, monkeypatch):
    _, paths = odd_folder
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbf# chosen\n" + b"\r\n".join(os.fsencode(p) for p in paths) + b"\n\n")
    assert read_path_list(str(listing)) == paths
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listing.read_bytes())))
    assert read_path_list("-") == paths


def test_path_list_split_on_nul_keeps_names_with_newlines(tmp_path):
    names = [b"a\nb.jpg", b" spaced .png", b"#hash.jpg", b"caf\xe9.jpg"]
    listing = tmp_path / "list0"
    listing.write_bytes(b"\0".join(names) + b"\0")  # find -print0
    assert read_path_list(str(listing)) == [os.fsdecode(n) for n in names]


# -- 2. output faults ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("writer_class", [CsvWriter, JsonlWriter])
def test_a_full_device_is_one_line_error(writer_class):
    with pytest.raises(OutputError) as caught, writer_class("/dev/full") as writer:
        writer.write(Result("a.jpg", 0.5))
    assert str(caught.value) == "/dev/full: no space left on device"
    assert isinstance(caught.value, OSError) and caught.value.errno == 28


def test_check_writable_refuses_devices_but_not_stdout_null_or_pipes(tmp_path):
    if os.path.exists("/dev/full"):
        with pytest.raises(OutputError, match=r"^/dev/full: is a device, not a file \(use - for stdout\)$"):
            check_writable("/dev/full")
    assert check_writable("-") == "-"
    check_writable(os.devnull)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    check_writable(fifo)
    with pytest.raises(OutputError, match="is a directory, not a file"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="the folder .*/nowhere does not exist"):
        check_writable(tmp_path / "nowhere" / "out.csv")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="a part of the path is not a folder"):
        check_writable(tmp_path / "file" / "out.csv")
    assert check_writable(tmp_path / "new.csv") == tmp_path / "new.csv"
    assert not (tmp_path / "new.csv").exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permissions")
def test_check_writable_says_permission_denied(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.csv").write_text("")
    (locked / "old.csv").chmod(0o444)
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"new.csv: permission denied$"):
            check_writable(locked / "new.csv")
        with pytest.raises(OutputError, match=r"old.csv: permission denied$"):
            check_writable(locked / "old.csv")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_disk_filling_mid_run_leaves_only_whole_rows(tmp_path, kind):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes write() stop short, then fail with EFBIG."""
    out = tmp_path / f"rows.{kind}"
    child = run_python(
        f"""
        import json, resource, signal, sys
        from dgiqa_cli.io.rows import CsvWriter, JsonlWriter, OutputError
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_rows import Result, SETTINGS
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write then says EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
        written = 0
        try:
            with {"CsvWriter" if kind == "csv" else "JsonlWriter"}({str(out)!r}, settings=SETTINGS) as writer:
                for i in range(1000):
                    writer.write(Result(f"/pictures/{{i:04d}}" + "-long-name" * (i % 7) + ".jpg", 0.1 + i / 1e4))
                    written += 1
        except OutputError as error:
            print(json.dumps({{"written": written, "message": str(error)}}))
        """
    )
    assert child.returncode == 0, child.stderr.decode()
    report = json.loads(child.stdout)
    assert report["message"] == f"{out}: file too large (the file-size limit was reached)"
    assert 5 < report["written"] < 1000
    data = out.read_bytes()
    assert len(data) <= 3000 and data.endswith(b"\n")
    rows = read_csv(out) if kind == "csv" else read_jsonl(out)
    assert len(rows) == report["written"]
    assert rows[-1]["path"].startswith(f"/pictures/{report['written'] - 1:04d}")
    if kind == "csv":
        with open(out, newline="") as fh:
            assert all(len(r) == len(FIELDS) for r in csv.reader(fh))  # no torn row for csv to read as bogus


def test_torn_row_is_cut_from_a_large_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    whole = "".join(json.dumps({"path": f"{i}.jpg", "score": 0.5}) + "\n" for i in range(5000))
    path.write_text(whole + '{"path": "x')
    drop_partial_last_row(path)
    assert path.read_text() == whole
    path.write_text('{"path": "only a torn row')
    drop_partial_last_row(path)
    assert path.read_text() == ""


# -- 3. two runs on one output ---------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_output_fails_at_once(tmp_path):
    out = tmp_path / "out.csv"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dgiqa_cli.io.rows import lock_outputs\n"
            f"with lock_outputs([{str(out)!r}, None, '-']):\n"
            "    print('locked', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(OutputError) as caught, lock_outputs([tmp_path / "other.jsonl", out]):
            pytest.fail("two runs held the same output")
        message = str(caught.value)
        assert message.startswith(f"{out}: is being written by another dgiqa run (pid {holder.pid});")
        with lock_outputs([tmp_path / "other.jsonl"]):  # released when the attempt failed
            pass
    finally:
        holder.communicate(b"\n", timeout=30)
    with lock_outputs([out, "-"]):  # free once the other run has ended
        assert (tmp_path / "out.csv.lock").exists()


# -- 4. "-" is stdout ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_dash_writes_rows_to_stdout(tmp_path, kind):
    child = run_python(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from dgiqa_cli.io.rows import CsvWriter, JsonlWriter, check_writable, completed_paths, lock_outputs
        from test_rows import Result
        check_writable("-")
        assert completed_paths("-") == set()
        with lock_outputs(["-"]), {"CsvWriter" if kind == "csv" else "JsonlWriter"}("-", append=True) as writer:
            writer.write(Result("a.jpg", 0.5))
            writer.write(Result("caf\\udce9.jpg", None, error="not an image"))
        """,
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert not (tmp_path / "-").exists()
    text = child.stdout.decode("utf-8")
    if kind == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    assert [r["path"] for r in rows] == ["a.jpg", r"caf\xe9.jpg"]
    assert rows[1]["error"] == "not an image"


# -- 5. terminals and spreadsheets -----------------------------------------------------------------------------------


def test_printable_keeps_a_name_on_one_harmless_line():
    name = os.fsdecode(b"\x1b[31mred\nfake line\r\tx\x7f\xc2\x85\xe9") + "\u202egpj.exe\u2028é写真.jpg"
    shown = printable(name)
    assert shown == r"\x1b[31mred\nfake line\r\tx\x7f\x85\xe9\u202egpj.exe\u2028é写真.jpg"
    assert shown.isprintable()
    assert printable("/data/été/photo 1.jpg") == "/data/été/photo 1.jpg"


def test_csv_safe_defuses_formulas_in_text_cells_only(tmp_path):
    out = tmp_path / "rows.csv"
    paths = ['=HYPERLINK("http://x")', "+1.jpg", "-rf.jpg", "@SUM(A1).png", "\tx.jpg", "'quoted.jpg", "ok.jpg"]
    with CsvWriter(out, csv_safe=True, settings=dict(SETTINGS, seed=-7)) as writer:
        for path in paths:
            writer.write(Result(path, -1.25, error="=1+1" if path == "ok.jpg" else None))
    with open(out, newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    assert [r["path"] for r in raw] == ["'" + p for p in paths[:-1]] + ["ok.jpg"]
    assert raw[-1]["error"] == "'=1+1"
    assert {r["score"] for r in raw} == {"-1.25"} and {r["seed"] for r in raw} == {"-7"}  # numbers untouched
    rows = read_csv(out, csv_safe=True)
    assert [r["path"] for r in rows] == paths and rows[-1]["error"] == "=1+1" and rows[0]["score"] == -1.25
    assert completed_paths(out, csv_safe=True) == set(paths)
    plain = tmp_path / "plain.csv"
    with CsvWriter(plain) as writer:
        writer.write(Result("=1+1.jpg", -1.25))
    assert read_csv(plain)[0]["path"] == "=1+1.jpg"


# -- 6. settings in every row; resume refuses other settings ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_rows_carry_the_settings_and_resume_refuses_others(tmp_path, kind):
    out = tmp_path / f"rows.{kind}"
    writer_class = CsvWriter if kind == "csv" else JsonlWriter
    with writer_class(out, settings=SETTINGS) as writer:
        writer.write(Result("a.jpg", 0.5))
        writer.write(Result("b.jpg", None, error="not an image", crops=0, decoder=None))
    rows = read_csv(out) if kind == "csv" else read_jsonl(out)
    assert list(rows[0]) == list(FIELDS)
    for row in rows:
        assert {k: row[k] for k in SETTINGS} == SETTINGS  # the run's crops even where the image failed
    assert rows[0]["decoder"] == "opencv" and rows[1]["decoder"] is None

    check_resume(out, SETTINGS)  # the same run: fine
    with pytest.raises(ResumeError) as caught:
        check_resume(out, dict(SETTINGS, crops=1, precision="bf16"))
    assert str(caught.value) == (
        f"{out} was made with crops=3, precision=fp32; this run has crops=1, precision=bf16: "
        "use a new output file, or --overwrite to start it again"
    )


def test_resume_refuses_a_file_without_the_settings_columns(tmp_path):
    out = tmp_path / "old.csv"
    out.write_text(",".join(OLD_FIELDS) + "\r\na.jpg,0.5,640,480,3,dgiqa,dgiqa-koniq,vits,0 to 1,\r\n")
    with pytest.raises(ResumeError, match=r"old.csv has no weights_sha256, crop_mode, seed, precision, backend col"):
        check_resume(out, SETTINGS)
    with pytest.raises(ResumeError, match="an older dgiqa, or another program, wrote it"):
        CsvWriter(out, append=True, settings=SETTINGS)
    assert out.read_text().count("\n") == 2  # untouched
    old_jsonl = tmp_path / "old.jsonl"
    old_jsonl.write_text(json.dumps(dict.fromkeys(OLD_FIELDS, None) | {"path": "a.jpg"}) + "\n")
    with pytest.raises(ResumeError, match="has no weights_sha256"):
        check_resume(old_jsonl, SETTINGS)


def _can_mount_in_a_namespace() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(sys.platform != "linux" or not _can_mount_in_a_namespace(), reason="needs unshare -rm (Linux)")
def test_a_real_full_disk_then_a_read_only_one(tmp_path):
    """A 64 KiB tmpfs, mounted in a private mount namespace (nothing outside sees it), filled by the writer."""
    mount = tmp_path / "small"
    mount.mkdir()
    fill = f"""
        import json
        from dgiqa_cli.io.rows import JsonlWriter, OutputError, check_writable
        written = 0
        try:
            with JsonlWriter("{mount}/rows.jsonl", settings={{"weights_sha256": "ab" * 32}}) as writer:
                while True:
                    writer.write(type("R", (), {{"as_dict": lambda self: {{"path": f"{{written:06d}}.jpg"}}}})())
                    written += 1
        except OutputError as error:
            rows = [json.loads(line) for line in open("{mount}/rows.jsonl")]
            assert len(rows) == written and rows[-1]["path"] == f"{{written - 1:06d}}.jpg", (len(rows), written)
            print(error)
        try:
            check_writable("{mount}/next.csv")
        except OutputError as error:
            print(error)
    """
    check = f"""
        from dgiqa_cli.io.rows import OutputError, check_writable
        for name in ("rows.jsonl", "new.csv"):
            try:
                check_writable("{mount}/" + name)
            except OutputError as error:
                print(error)
    """
    (tmp_path / "fill.py").write_text(textwrap.dedent(fill))
    (tmp_path / "check.py").write_text(textwrap.dedent(check))
    script = (
        'mount -t tmpfs -o size=64k tmpfs "$1" && "$2" "$3/fill.py" && mount -o remount,ro "$1" && "$2" "$3/check.py"'
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", mount, sys.executable, tmp_path],
        capture_output=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [
        f"{mount}/rows.jsonl: no space left on device",
        f"{mount}/next.csv: no space left on device",
        f"{mount}/rows.jsonl: read-only file system",
        f"{mount}/new.csv: read-only file system",
    ]
