"""`attest demo` says where it wrote the demo's single sign-on settings (issue 20, part 7): the `.env` of the
directory it ran in, read only by the commands started there; elsewhere the UI has no SSO button."""

from __future__ import annotations

from types import SimpleNamespace

from attest import demo
from attest.connectors.sandbox import idp


def test_demo_names_the_env_file_and_where_to_start_the_ui(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(idp, "write_demo_env", lambda *a, **k: True)
    state = SimpleNamespace(settings=SimpleNamespace(env="development"))
    (message,) = demo._demo_sso(state)
    assert str(tmp_path / ".env") in message
    assert f"start in {tmp_path}" in message and "no single sign-on button" in message
