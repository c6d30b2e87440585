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


class NoGroundTruthError(ArtifactError):
    """The scene has no ground-truth labels (a dataset of your own): nothing to score against."""


def refused_path(error: OSError) -> EconsgError:
    """A path the system refuses (no such folder, no permission, a full disk) as a user error that names it."""
    return EconsgError(f"{error.filename or 'a file'}: {error.strerror or error}")


def not_utf8(error: UnicodeDecodeError) -> str:
    """What a text file that is not UTF-8 holds, for a message naming the file: the first byte that is not."""
    return f"not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x})"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (its type's name when it has none), cut to `limit` characters: for
    quoting a library's error inside a one-line message (a state-dict mismatch lists every key on its own line)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
