"""Gradio's uploads and outputs: in the server's own folder, bounded as its downloads are,
deleted with it (issue 30, item 11: 4.6 MB a request, cleaned only hourly)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import gradcam.demo.session as session_module
from gradcam import load_model
from gradcam.demo.app import serve
from gradcam.demo.session import DemoSession


def test_the_cache_is_pruned_to_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "MAX_CACHE_BYTES", 2500)
    session = DemoSession(load_model("shapes"), folder=tmp_path / "demo")
    for i in range(5):  # Gradio keeps each file in a folder named by its hash
        path = session.cache_folder / f"hash{i}" / "upload.png"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, ns=(i * 10**9, i * 10**9))
    download = session.folder / "maps.npz"
    download.write_bytes(b"x" * 1000)  # the downloads have their own cap
    assert session.prune_cache() == 2000
    left = sorted(p.parent.name for p in session.cache_folder.rglob("*.png"))
    assert left == ["hash3", "hash4"] and download.exists()
    assert sorted(p.name for p in session.cache_folder.iterdir()) == ["hash3", "hash4"]


def test_serve_keeps_gradios_cache_in_its_own_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", "/tmp/gradio-shared")  # restored after the test
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve("shapes", port=port, vl=False, block=False, quiet=True)
    try:
        cache = Path(app.GRADIO_CACHE)
        assert cache.name == "gradio" and cache.parent.name.startswith(
            f"{session_module.FOLDER_PREFIX}{os.getpid()}-"
        )
    finally:
        app.close()
