"""Every user-facing error of the project is a :class:`ogfr_core.errors.UserError` (issue 26, item 3),
and a stage reports each one as one ERROR line, no traceback, exit status 1 (issue 11, item 2).

A new ``...Error`` class anywhere in ``ogfr_core`` fails :func:`test_every_error_class_is_a_user_error`
until it either inherits ``UserError`` (the user can fix it: the message names the file/key and the
fix) or is listed in :data:`INTERNAL_ERRORS` with the reason it is a bug, not the user's mistake.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

from _repo_synth import expect_user_error
import ogfr_core
from ogfr_core.errors import UserError
from ogfr_core.runtime import is_user_error, user_error_types

#: ``...Error`` classes of ogfr_core that are internal (a bug of the code, not of the user's input or
#: setup), qualified name → why. Such an error keeps its traceback in ``run_stage``. Empty today: every
#: error class the project defines is one the user can fix.
INTERNAL_ERRORS: dict[str, str] = {}

#: arguments for the classes whose constructor is not ``cls(message)``
SPECIAL_ARGS = {
    "ogfr_core.data.dataset.MissingLabelsError": ("label_maps", 2, 10, ["ds/a.jpg", "ds/b.jpg"]),
}


def _import_all() -> None:
    for info in pkgutil.walk_packages(ogfr_core.__path__, prefix="ogfr_core."):
        importlib.import_module(info.name)


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture(scope="module")
def project_errors() -> list[type]:
    """Every Exception subclass defined in ogfr_core (all its modules imported)."""
    _import_all()
    classes = {c for c in _subclasses(Exception) if c.__module__.split(".")[0] == "ogfr_core"}
    return sorted(classes, key=_qualname)


def test_every_error_class_is_a_user_error(project_errors):
    named = [c for c in project_errors if c.__name__.endswith("Error") and c is not UserError]
    assert len(named) >= 20, [c.__name__ for c in named]  # the import of every module worked
    stray = [_qualname(c) for c in named if not issubclass(c, UserError) and _qualname(c) not in INTERNAL_ERRORS]
    assert not stray, f"neither a UserError nor listed in INTERNAL_ERRORS: {stray}"
    for name in INTERNAL_ERRORS:  # the allow-list names existing classes that really are not user errors
        cls = next((c for c in named if _qualname(c) == name), None)
        assert cls is not None and not issubclass(cls, UserError), name


@pytest.mark.parametrize("name, base", [
    ("ogfr_core.config.ConfigError", ValueError),
    ("ogfr_core.data.images.ImageReadError", ValueError),
    ("ogfr_core.data.readers.DatasetLayoutError", ValueError),
    ("ogfr_core.training.checkpoint.CheckpointError", RuntimeError),
    ("ogfr_core.training.loop.NonFiniteLossError", RuntimeError),
    ("ogfr_core.io.OutputWriteError", OSError),
    ("ogfr_core.occlusion.learned.OccluderWeightsError", FileNotFoundError),
    ("ogfr_core.report.sources.MissingMetricsError", FileNotFoundError),
])
def test_errors_keep_their_builtin_base(name, base):
    """``except ValueError`` (RuntimeError, OSError, ...) callers written before UserError still work."""
    module, cls_name = name.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls_name)
    assert issubclass(cls, UserError) and issubclass(cls, base)


def test_user_error_types_and_is_user_error():
    import errno

    from ogfr_core.io import OutputWriteError

    assert user_error_types() == (UserError, FileNotFoundError)
    assert is_user_error(UserError("x")) and is_user_error(FileNotFoundError("x"))
    assert is_user_error(OutputWriteError(errno.ENOSPC, "disk full"))
    assert is_user_error(OSError(errno.ENOSPC, "No space left on device"))  # a library's own writer
    assert not is_user_error(OSError(errno.EBADF, "Bad file descriptor"))
    assert not is_user_error(ValueError("a bug"))


def test_errors_module_is_at_the_bottom_of_the_import_graph():
    """errors.py imports nothing (from ogfr_core or elsewhere) but ``__future__``."""
    tree = ast.parse(Path(ogfr_core.__file__).with_name("errors.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)


def _instance(cls: type) -> BaseException:
    args = SPECIAL_ARGS.get(_qualname(cls), (f"{cls.__name__.lower()}.yaml: something is wrong; fix it",))
    return cls(*args)


def test_every_user_error_is_one_line_and_exit_1(project_errors, tmp_path, caplog):
    """``run_stage`` turns each UserError subclass into exit status 1 and exactly one ERROR line with
    the class name and the message, no traceback."""
    users = [c for c in project_errors if issubclass(c, UserError)]
    assert len(users) >= 20
    for cls in [UserError, *users]:
        exc = _instance(cls)

        def main(exc=exc):
            raise exc

        message = expect_user_error(main, caplog, tmp_path, f"{cls.__name__}: ")
        assert str(exc).splitlines()[0] in message, (cls, message)
