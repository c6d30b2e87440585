"""User-facing errors: the CLI prints these as one line, without a traceback."""


class EconsgError(Exception):
    """Bad input or configuration; the message names the file/field, the value and the expectation."""


class ConfigError(EconsgError):
    """Invalid params: `lines` holds one `section.field: message` string per problem."""

    def __init__(self, source: str, lines: list[str]):
        self.source = source
        self.lines = lines
        super().__init__(f"{source}: invalid params\n" + "\n".join(lines))


class ArtifactError(EconsgError):
    """A Zarr artifact is missing, stale (other schema version) or does not match its schema."""


def refused_path(error: OSError) -> EconsgError:
    """A path the system refuses (no such folder, no permission, a full disk) as a user error that names it."""
    return EconsgError(f"{error.filename or 'a file'}: {error.strerror or error}")
