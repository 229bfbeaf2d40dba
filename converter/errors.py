"""The errors vrconvert raises on purpose; the CLI turns each into one line and an exit status."""


class VRConvertError(Exception):
    """Base class: a problem the user can act on (message is shown as is)."""

    exit_code = 2


class InputError(VRConvertError):
    """Bad input or usage: unreadable, unsafe or mismatched files, bad options (exit 2)."""


class ParityError(VRConvertError):
    """The two models disagree beyond tolerance (exit 1)."""

    exit_code = 1


class DownloadError(InputError):
    """A pretrained file could not be fetched or failed its hash check (exit 2)."""
