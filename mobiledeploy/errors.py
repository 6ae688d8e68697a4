"""One root exception; user errors apart from internal ones.

Only the CLI turns these into exit codes (0 ok, 1 validation failed, 2 user error, 3 internal).
"""

from __future__ import annotations


class MobileDeployError(Exception):
    """Root of every error mobiledeploy raises on purpose."""

    exit_code = 3


class UserError(MobileDeployError):
    """Bad input: a definition, an option, a missing file. One line, names the fix."""

    exit_code = 2


class DefinitionError(UserError):
    """A model definition that does not validate. ``str()`` names file, field and fix."""

    def __init__(self, path: str, field: str, message: str):
        self.path = path
        self.field = field
        self.message = message
        loc = f"{path}: {field}" if field else path
        super().__init__(f"{loc}: {message}")


class MissingDependencyError(UserError):
    """An optional extra is not installed; the message gives the pip command."""

    def __init__(self, module: str, extra: str, purpose: str = ""):
        self.module = module
        self.extra = extra
        what = f" ({purpose})" if purpose else ""
        super().__init__(
            f"'{module}' is not installed{what}: run  pip install 'mobiledeploy[{extra}]'"
        )


class ValidationFailed(MobileDeployError):
    """Some artifact is out of tolerance. Exit code 1."""

    exit_code = 1


class InternalError(MobileDeployError):
    """A bug or a converter crash that is not the user's fault."""

    exit_code = 3
