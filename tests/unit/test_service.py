"""The login-service files as rendered: systemd's unit, launchd's plist and Windows' task XML, with the paths quoted
or escaped for each file's syntax, and written where each service manager looks. (Installing them needs the service
manager itself: tests/e2e/test_service.py, with systemd-analyze.)"""

from __future__ import annotations

import importlib.util
import plistlib
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tokend import paths, service

REPO = Path(__file__).resolve().parents[2]
NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
TOKEND = Path("/home/me/.local/bin/tokend")


@pytest.fixture(autouse=True)
def templates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The templates as the wheel ships them (``tokend.service_templates``): from the checkout's service/ folder
    when tokend is imported from a checkout, which has no such package (pyproject's wheel mapping makes it)."""
    if importlib.util.find_spec("tokend.service_templates") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "tokend.service_templates", REPO / "service" / "__init__.py", submodule_search_locations=[str(REPO / "service")]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "tokend.service_templates", module)


def exec_start(unit: str) -> str:
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


@pytest.mark.parametrize(
    ("config", "written"),
    [
        ("/home/me/c/config.toml", "/home/me/c/config.toml"),
        ("/home/me/my config/config.toml", '"/home/me/my config/config.toml"'),  # a space: one quoted word
        ("/home/me/100%/config.toml", "/home/me/100%%/config.toml"),  # % starts a specifier
        ("/home/me/$HOME/config.toml", "/home/me/$$HOME/config.toml"),  # $ starts a variable
        ("/home/me/a\tb/config.toml", '"/home/me/a\tb/config.toml"'),  # quoted whitespace is kept as it is
        ('/home/me/say "hi"/config.toml', '"/home/me/say \\"hi\\"/config.toml"'),  # C escapes inside quotes
        ("/home/me/back\\slash/config.toml", '"/home/me/back\\\\slash/config.toml"'),
        ("/home/me/it's/config.toml", '"/home/me/it\'s/config.toml"'),  # a single quote would open a quoted word
        ("/home/me/50% $off/config.toml", '"/home/me/50%% $$off/config.toml"'),
    ],
)
def test_systemd_gets_the_config_as_one_literal_word(config: str, written: str) -> None:
    r = service.render_systemd(TOKEND, Path(config))
    assert exec_start(r.text) == f"{TOKEND} run --config {written}"


@pytest.mark.parametrize(
    ("executable", "written"),
    [
        ("/opt/my tools/tokend", '"/opt/my tools/tokend"'),
        ("/opt/$HOME/tokend", "/opt/$HOME/tokend"),  # systemd never expands variables in the executable
        ("/opt/100%/tokend", "/opt/100%%/tokend"),  # but it does resolve specifiers there
    ],
)
def test_the_executable_is_one_literal_word_too(executable: str, written: str) -> None:
    r = service.render_systemd(Path(executable), Path("/c/config.toml"))
    assert exec_start(r.text) == f"{written} run --config /c/config.toml"


def test_a_relative_config_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = service.render_systemd(TOKEND, Path("config.toml"))
    assert exec_start(r.text) == f"{TOKEND} run --config {tmp_path / 'config.toml'}"


def test_the_default_configs_unit_is_tokend_service_in_the_user_unit_folder(home: Path) -> None:
    r = service.render_systemd(TOKEND, home / ".config" / "tokend" / "config.toml")
    assert r.path == home / ".config" / "systemd" / "user" / "tokend.service"
    assert "Description=tokend (tokend): " in r.text and "journalctl --user -u tokend`" in r.text
    assert "Type=notify" in r.text and "UMask=0077" in r.text and "{" not in r.text


def test_another_configs_unit_has_its_own_name(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    name = paths.service_name(config)
    assert name == f"tokend-{paths.config_id(config)}"
    r = service.render_systemd(TOKEND, config)
    assert r.path == home / ".config" / "systemd" / "user" / f"{name}.service"
    assert f"Description=tokend ({name}): " in r.text


@pytest.mark.parametrize("config", ["/Users/me/a&b/config.toml", "/Users/me/<x>/config.toml", '/Users/me/"q"/c.toml'])
def test_launchd_gets_every_path_as_one_argument_whatever_it_holds(home: Path, config: str) -> None:
    r = service.render_launchd(Path("/Users/me/bin/to&kend"), Path(config))
    plist = plistlib.loads(r.text.encode())
    assert plist["ProgramArguments"] == ["/Users/me/bin/to&kend", "run", "--config", config]
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == f"{paths.log_dir()}/launchd.log"


def test_launchd_labels_the_default_config_plainly_and_others_by_their_id(home: Path, tmp_path: Path) -> None:
    default = service.render_launchd(TOKEND, home / ".config" / "tokend" / "config.toml")
    other = service.render_launchd(TOKEND, tmp_path / "c.toml")
    assert plistlib.loads(default.text.encode())["Label"] == "org.tokend.tokend"
    label = f"org.tokend.tokend.tokend-{paths.config_id(tmp_path / 'c.toml')}"
    assert plistlib.loads(other.text.encode())["Label"] == label
    assert default.path == home / "Library" / "LaunchAgents" / "org.tokend.tokend.plist"
    assert other.path == home / "Library" / "LaunchAgents" / f"{label}.plist"


def task(text: str) -> ET.Element:
    # the template declares UTF-16, as schtasks wants the file; parsed here from the same bytes it would get
    return ET.fromstring(text.encode("utf-16"))


def test_the_task_runs_python_with_the_config_quoted_for_windows(tmp_path: Path) -> None:
    config = tmp_path / "R&D <team>" / "config.toml"
    root = task(service.render_task(TOKEND, config, user="ME").text)
    exec_ = root.find("t:Actions/t:Exec", NS)
    assert exec_ is not None
    assert exec_.findtext("t:Arguments", namespaces=NS) == f'-m tokend run --config "{config}"'
    assert exec_.findtext("t:Command", namespaces=NS) == sys.executable  # not python.exe: left as it is
    assert root.findtext("t:RegistrationInfo/t:URI", namespaces=NS) == f"\\{paths.service_name(config)}"


def test_the_task_runs_pythonw_when_python_is_python_exe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/opt/py/python.exe")  # Windows' name, in a path this OS can read
    root = task(service.render_task(TOKEND, tmp_path / "c.toml", user="ME").text)
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=NS) == "/opt/py/pythonw.exe"


@pytest.mark.parametrize(
    ("env", "user", "want"),
    [
        ({}, "ME", "ME"),
        ({"USERDOMAIN": "CONTOSO"}, "ME", "CONTOSO\\ME"),
        ({"USERNAME": "alice", "USERDOMAIN": "R&D"}, None, "R&D\\alice"),
        ({"USER": "bob"}, None, "bob"),
    ],
)
def test_the_task_runs_as_the_user_with_the_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], user: str | None, want: str
) -> None:
    for var in ("USERNAME", "USERDOMAIN", "USER"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    root = task(service.render_task(TOKEND, tmp_path / "c.toml", user=user).text)
    assert root.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=NS) == want
    assert root.findtext("t:Principals/t:Principal/t:UserId", namespaces=NS) == want


def test_the_task_file_is_kept_in_tokends_data_folder(home: Path, tmp_path: Path) -> None:
    r = service.render_task(TOKEND, tmp_path / "c.toml", user="ME")
    assert r.path == paths.data_dir() / f"{paths.service_name(tmp_path / 'c.toml')}-task.xml"
    assert r.path.is_relative_to(home)
