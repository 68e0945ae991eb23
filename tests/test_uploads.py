"""Uploads: size limits, zip bombs, escaping members, all-or-nothing unpacking, and the two tabs that take zips."""

import json
import os
import stat
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from labeling_images import many

from lab import paths
from lab.errors import ConfigError, LabError, localize
from lab.uploads import MB, UploadLimits, check_file, receive, unpack

BOMB = "bomb.zip: 'zeros.bin' unpacks to more than 100 times its compressed size, as zip bombs do; nothing was kept."


def make_zip(path: Path, members: dict, compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``members``: name -> bytes, or name -> (bytes, unix mode) for links and other special files."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if isinstance(data, tuple):
                data, mode = data
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def bomb(path: Path) -> Path:
    """About 20 KB that unpacks to 20 MB."""
    return make_zip(path, {"zeros.bin": b"\0" * (20 * MB)})


def kept_files(home: Path) -> list[Path]:
    return sorted(p.relative_to(home) for p in home.rglob("*") if not p.is_dir())


def uploads_left(home: Path) -> list[str]:
    folder = home / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_good_zip_and_images_arrive_in_one_new_folder(tmp_path, lab_home):
    pictures = many(tmp_path / "pics", 3)
    archive = make_zip(
        tmp_path / "set.zip",
        {
            "set/": b"",
            "set/a.png": pictures[0].read_bytes(),
            "set/deep/b.png": pictures[1].read_bytes(),
            "__MACOSX/set/._a.png": b"resource fork",
            "set/notes.txt": b"kept, but not an image",
        },
    )
    received = receive([pictures[2], archive, pictures[2]], {".png"})
    assert received.folder.parent == lab_home / "uploads" and received.folder.is_dir()
    assert [p.relative_to(received.folder) for p in received.entries] == [
        Path("0002.png"),
        Path("set"),
        Path("0002_1.png"),
    ]
    assert sorted(str(p.relative_to(received.folder)) for p in received.folder.rglob("*") if p.is_file()) == [
        "0002.png",
        "0002_1.png",
        "set/set/a.png",
        "set/set/deep/b.png",
        "set/set/notes.txt",
    ]
    assert (received.folder / "set/set/deep/b.png").read_bytes() == pictures[1].read_bytes()
    assert uploads_left(lab_home) == [received.folder.name]  # no staging folder left behind


def test_a_zip_bomb_is_refused_and_nothing_is_kept(tmp_path, lab_home):
    with pytest.raises(LabError) as err:
        receive([many(tmp_path, 1)[0], bomb(tmp_path / "bomb.zip")], {".png"})
    assert str(err.value) == BOMB
    assert "压缩炸弹" in localize(err.value, "zh")
    assert uploads_left(lab_home) == [] and kept_files(lab_home) == []


def test_the_unpacked_total_is_limited_across_the_files_of_one_upload(tmp_path, lab_home, monkeypatch):
    monkeypatch.setenv("LAB_UPLOAD_MAX_UNPACKED_MB", "1")
    noise = [os.urandom(600 * 1024), os.urandom(600 * 1024)]  # incompressible: no ratio limit applies
    first = make_zip(tmp_path / "first.zip", {"a.bin": noise[0]}, zipfile.ZIP_STORED)
    second = make_zip(tmp_path / "second.zip", {"b.bin": noise[1]}, zipfile.ZIP_STORED)
    assert receive([first], {".png"}).entries  # one alone fits
    before = kept_files(lab_home)
    with pytest.raises(LabError, match=r"^second.zip unpacks to more than 1 MB, .*nothing was kept\.$"):
        receive([first, second], {".png"})
    assert kept_files(lab_home) == before and len(uploads_left(lab_home)) == 1


def test_too_many_files_are_refused(tmp_path, lab_home, monkeypatch):
    monkeypatch.setenv("LAB_UPLOAD_MAX_FILES", "5")
    archive = make_zip(tmp_path / "many.zip", {f"{i}.txt": b"x" for i in range(6)})
    with pytest.raises(LabError, match=r"^many.zip holds more than 5 files"):
        receive([archive], {".png"})
    with pytest.raises(LabError, match=r"holds more than 5 files"):
        receive(many(tmp_path / "pics", 6), {".png"})
    assert uploads_left(lab_home) == [] and kept_files(lab_home) == []


def test_a_member_or_an_archive_over_the_ratio_is_refused(tmp_path, lab_home):
    member = make_zip(tmp_path / "member.zip", {"ok.txt": b"hello", "flat.bmp": b"\0" * (4 * MB)})
    with pytest.raises(LabError, match=r"^member.zip: 'flat.bmp' unpacks to more than 100 times its compressed size"):
        unpack(member, lab_home / "out")
    # Each member under 1 MB is not held to the ratio, but the archive as a whole is.
    spread = make_zip(tmp_path / "spread.zip", {f"{i}.bin": b"\0" * (900 * 1024) for i in range(30)})
    with pytest.raises(LabError, match=r"^spread.zip unpacks to more than 100 times its own size"):
        unpack(spread, lab_home / "out")
    assert not (lab_home / "out").exists() and kept_files(lab_home) == []
    text = make_zip(tmp_path / "text.zip", {"notes.txt": b"a" * 200_000})  # shrinks ~200x, but small
    assert (unpack(text, lab_home / "text") / "notes.txt").stat().st_size == 200_000


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("../evil.png", b"x", "points outside the archive"),
        ("ok/../../evil.png", b"x", "points outside the archive"),
        ("/etc/evil.png", b"x", "points outside the archive"),
        ("C:/evil.png", b"x", "points outside the archive"),
        ("..\\evil.png", b"x", "points outside the archive"),
        ("link.png", (b"/etc/passwd", stat.S_IFLNK | 0o777), "is a symbolic link"),
        ("fifo", (b"", stat.S_IFIFO | 0o644), "is not a plain file or folder"),
    ],
)
def test_members_that_escape_or_are_links_refuse_the_whole_zip(tmp_path, lab_home, name, data, reason):
    archive = make_zip(tmp_path / "sly.zip", {"first.png": b"fine", name: data})
    with pytest.raises(LabError) as err:
        receive([archive], {".png"})
    assert str(err.value).startswith(f"sly.zip: {name!r} {reason}") and str(err.value).endswith("nothing was kept.")
    assert uploads_left(lab_home) == [] and kept_files(lab_home) == []
    assert not (tmp_path / "evil.png").exists() and not (lab_home / "evil.png").exists()


def test_names_that_do_not_decode_and_damaged_zips_are_refused(tmp_path, lab_home):
    archive = make_zip(tmp_path / "names.zip", {"é.png": b"x"})  # flagged UTF-8
    archive.write_bytes(archive.read_bytes().replace("é".encode(), b"\xff\xfe"))
    with pytest.raises(LabError, match=r"^names.zip has a file name that cannot be read"):
        receive([archive], {".png"})
    # The central directory says 1,000 bytes; the member holds 2 MB. What is written is what is counted.
    lying = make_zip(tmp_path / "lying.zip", {"big.bin": os.urandom(2 * MB)}, zipfile.ZIP_STORED)
    data = bytearray(lying.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    lying.write_bytes(bytes(data))
    with pytest.raises(LabError, match=r"^lying.zip could not be unpacked \(.*\); nothing was kept\.$"):
        receive([lying], {".png"})
    encrypted = make_zip(tmp_path / "locked.zip", {"a.png": b"x"})
    data = bytearray(encrypted.read_bytes())
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + flags] |= 0x1
    encrypted.write_bytes(bytes(data))
    with pytest.raises(LabError, match=r"^locked.zip: 'a.png' is encrypted"):
        receive([encrypted], {".png"})
    assert uploads_left(lab_home) == [] and kept_files(lab_home) == []


def test_limits_come_from_the_environment(tmp_path, monkeypatch):
    assert UploadLimits.from_env() == UploadLimits(
        max_file_mb=500, max_unpacked_mb=2000, max_files=10000, max_ratio=100
    )
    for name, value in [
        ("LAB_UPLOAD_MAX_MB", "1"),
        ("LAB_UPLOAD_MAX_UNPACKED_MB", "2.5"),
        ("LAB_UPLOAD_MAX_FILES", "7"),
        ("LAB_UPLOAD_MAX_RATIO", "20"),
    ]:
        monkeypatch.setenv(name, value)
    limits = UploadLimits.from_env()
    assert limits == UploadLimits(max_file_mb=1, max_unpacked_mb=2.5, max_files=7, max_ratio=20)
    assert limits.max_file_bytes == MB and limits.max_unpacked_bytes == int(2.5 * MB)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * MB))
    with pytest.raises(LabError) as err:
        check_file(big)
    assert str(err.value) == "big.png is 2.0 MB; this server takes at most 1 MB per uploaded file."
    assert localize(err.value, "zh") == "big.png 有 2.0 MB；此服务器每个上传文件最多 1 MB。"
    for bad in ("lots", "-3", "0", "2.5"):
        monkeypatch.setenv("LAB_UPLOAD_MAX_FILES", bad)
        with pytest.raises(ConfigError, match=f"^LAB_UPLOAD_MAX_FILES must be a positive number, not '{bad}'"):
            UploadLimits.from_env()
    monkeypatch.setenv("LAB_UPLOAD_MAX_FILES", "7")
    for bad in ("nan", "inf"):
        monkeypatch.setenv("LAB_UPLOAD_MAX_RATIO", bad)
        with pytest.raises(ConfigError, match="^LAB_UPLOAD_MAX_RATIO must be a positive number"):
            UploadLimits.from_env()


def test_unpacking_stays_in_the_workspace_on_a_shared_server(tmp_path, lab_home, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    archive = make_zip(tmp_path / "set.zip", {"a.png": b"x"})
    with pytest.raises(LabError, match="upload yours instead"):
        unpack(archive, tmp_path / "outside")
    assert not (tmp_path / "outside").exists()
    assert (unpack(archive, lab_home / "inside") / "a.png").read_bytes() == b"x"
    with pytest.raises(LabError, match="already exists"):
        unpack(archive, lab_home / "inside")


def test_the_labeling_upload_refuses_a_bomb_and_keeps_nothing(launch_app, tmp_path, lab_home):
    app, ctx, client = launch_app(model="")
    before = kept_files(lab_home)
    folder, status = client.predict(
        [handle_file(str(many(tmp_path, 1)[0])), handle_file(str(bomb(tmp_path / "bomb.zip")))],
        api_name="/label_upload",
    )
    assert status == BOMB
    assert kept_files(lab_home) == before and uploads_left(lab_home) == []
    zh = Client(app.local_url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    _, status = zh.predict([handle_file(str(tmp_path / "bomb.zip"))], api_name="/label_upload")
    assert status.startswith("bomb.zip：'zeros.bin' 解压后超过其压缩大小的 100 倍"), status


def test_the_dataset_import_refuses_a_bomb_and_keeps_nothing(launch_app, tmp_path, lab_home):
    app, ctx, client = launch_app(model="")
    before = kept_files(lab_home)
    status, _ = client.predict([handle_file(str(bomb(tmp_path / "bomb.zip")))], "boom", api_name="/dataset_import")
    assert status == BOMB
    assert kept_files(lab_home) == before and uploads_left(lab_home) == [] and not paths.datasets_dir().exists()
    sly = make_zip(tmp_path / "sly.zip", {"data.jsonl": b"{}", "../../escaped.jsonl": b"{}"})
    status, _ = client.predict([handle_file(str(sly))], "sly", api_name="/dataset_import")
    assert status.startswith("sly.zip: '../../escaped.jsonl' points outside the archive")
    assert kept_files(lab_home) == before and uploads_left(lab_home) == []
    picture = many(tmp_path / "pics", 1)[0]
    record = {
        "images": ["images/0000.png"],
        "messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "A square."}],
    }
    records = make_zip(
        tmp_path / "records.zip",
        {"data.jsonl": (json.dumps(record) + "\n").encode(), "images/0000.png": picture.read_bytes()},
    )
    status, chosen = client.predict([handle_file(str(records))], "records", api_name="/dataset_import")
    assert status.startswith("All 1 records"), status
    assert (paths.datasets_dir() / "records" / "data.jsonl").is_file()
    assert uploads_left(lab_home) == []  # the upload was only on its way into the dataset folder


def test_the_app_stops_an_upload_over_the_size_limit_while_it_arrives(launch_app, tmp_path, lab_home, monkeypatch):
    monkeypatch.setenv("LAB_UPLOAD_MAX_MB", "0.01")  # 10 KiB
    app, ctx, client = launch_app(model="")
    before = kept_files(lab_home)
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(20 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485 bytes"):
        client.predict([handle_file(str(big))], api_name="/label_upload")  # the page's config carries the limit
    answer = httpx.post(f"{app.local_url}gradio_api/upload", files={"files": ("big.png", big.read_bytes())})
    assert answer.status_code == 413  # and the server itself refuses it
    assert kept_files(lab_home) == before
