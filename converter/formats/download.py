"""Fetching torchvision's pretrained Kinetics-400 checkpoints into torch's hub cache, hash checked.

The server is not trusted either: the body may not exceed the file's published size (4 bytes per
published parameter, plus `limits.DOWNLOAD_SLACK`), the whole download has a deadline
(`limits.DOWNLOAD_SECONDS`) and a minimum rate (`limits.DOWNLOAD_MIN_RATE` over any
`limits.DOWNLOAD_WINDOW`, as curl's --speed-limit), both enforced by a timer that interrupts a blocking
read, so a server that trickles a byte every few seconds is dropped within the window rather than at
the deadline; a malformed response is one line, and the `.partial` file is removed on every exit path,
SIGTERM and SIGINT included.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from vrconvert.converter import limits
from vrconvert.converter.arch import families
from vrconvert.converter.errors import DownloadError, InputError
from vrconvert.converter.formats.output import removed_on_signal

# Tests (and mirrors) point this at another server; the file names stay torchvision's.
BASE_URL_ENV = "VRCONVERT_PRETRAINED_BASE_URL"
DEADLINE_ENV = "VRCONVERT_DOWNLOAD_SECONDS"  # a shorter (or, on slow links, longer) overall deadline


def hub_dir() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), without importing torch."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def url_for(arch: families.Variant) -> str:
    if arch.pretrained is None:
        raise InputError(f"{arch.name} has no published pretrained weights")
    base = os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{arch.pretrained.filename}" if base else arch.pretrained.url


def size_limit(arch: families.Variant) -> int:
    """The most bytes a published checkpoint of `arch` can hold: float32 parameters plus slack."""
    return 4 * arch.num_params + limits.DOWNLOAD_SLACK if arch.num_params else limits.DOWNLOAD_BYTES


class Watch:
    """The download's clock: the overall deadline and the minimum rate over a sliding window."""

    def __init__(self, seconds: float, rate: int = limits.DOWNLOAD_MIN_RATE, window: float = limits.DOWNLOAD_WINDOW):
        self.seconds, self.rate, self.window = seconds, rate, window
        self.started = self.mark = time.monotonic()
        self.received = self.marked = 0

    def got(self, count: int) -> None:
        self.received += count
        self.check()

    def check(self) -> None:
        """TimeoutError past the deadline, or when the last window brought fewer bytes than the rate asks."""
        now = time.monotonic()
        if now - self.started > self.seconds:
            raise TimeoutError(f"the download took longer than {self.seconds:g} s")
        if now - self.mark >= self.window:
            sent = self.received - self.marked
            if sent < self.rate * self.window:
                raise TimeoutError(
                    f"the server sent {sent:,} bytes in {now - self.mark:.0f} s, under vrconvert's minimum of "
                    f"{self.rate:,} bytes/s over {self.window:g} s"
                )
            self.mark, self.marked = now, self.received


@contextlib.contextmanager
def watched(watch: Watch) -> Iterator[None]:
    """Raises the watch's TimeoutError inside whatever blocks (connect, headers, body): a timer signal
    checks it every second (or sooner for a shorter deadline), so it interrupts a blocking read; main
    thread only (elsewhere: the per-read timeout and the checks between reads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def tick(_signum, _frame):
        watch.check()

    saved = signal.signal(signal.SIGALRM, tick)
    every = min(1.0, watch.seconds)
    signal.setitimer(signal.ITIMER_REAL, every, every)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved)


def _declared_length(response) -> int | None:
    text = response.headers.get("Content-Length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise DownloadError(f"the server sent a malformed Content-Length ({limits.brief(text)})")
    return int(text)


def _copy(response, out, digest, watch: Watch, most: int, url: str, label: str | None, total: int | None) -> bool:
    """Copies the response into `out` and `digest`, bounded by `most` bytes and `watch`; with a `label`
    and a declared total, a progress line. Returns whether that line was shown."""
    done, shown = 0, False
    while chunk := response.read1(1 << 16):  # returns what arrived: the deadline is checked often
        done += len(chunk)
        if done > most:
            raise DownloadError(f"{url}: the server sent more than the published file's {most:,} bytes")
        watch.got(len(chunk))
        out.write(chunk)
        digest.update(chunk)
        if label and total:
            print(f"\rdownloading {label}: {min(100, 100 * done // total)}%", end="", file=sys.stderr)
            shown = True
    return shown


def fetch_pretrained(name: str, timeout: float = 20.0, progress: bool = True, max_seconds: float | None = None) -> Path:
    """The cached checkpoint for `name`, downloading it first if needed; its SHA-256 prefix is checked.
    `max_seconds` bounds the whole download (default: $VRCONVERT_DOWNLOAD_SECONDS, else the limit)."""
    if max_seconds is None:
        max_seconds = limits.env_seconds(DEADLINE_ENV, limits.DOWNLOAD_SECONDS, limits.DOWNLOAD_MAX_SECONDS)
    try:
        arch, weights = families.published()[name]
    except KeyError:
        raise InputError(f"no pretrained weights for {name!r}; published: {', '.join(families.published())}") from None
    arch = replace(arch, pretrained=weights)  # swin3d_b publishes two files
    url = url_for(arch)
    target = hub_dir() / arch.pretrained.filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    digest = hashlib.sha256()
    most = size_limit(arch)
    watch = Watch(max_seconds)
    progress = progress and sys.stderr.isatty()  # a progress line is for a person watching, not for logs
    shown = False
    try:
        with (
            removed_on_signal(),
            watched(watch),
            urllib.request.urlopen(url, timeout=min(timeout, limits.DOWNLOAD_WINDOW)) as response,
            open(tmp, "wb") as out,
        ):
            total = _declared_length(response)
            if total is not None and total > most:
                raise DownloadError(
                    f"{url}: the server offers {total:,} bytes, more than the published file's {most:,}; refused"
                )
            shown = _copy(
                response, out, digest, watch, most, url, arch.pretrained.filename if progress else None, total
            )
        if shown:
            print(file=sys.stderr)
            shown = False
        if not digest.hexdigest().startswith(arch.pretrained.sha256_prefix):
            raise DownloadError(
                f"{url}: SHA-256 {digest.hexdigest()[:8]}... does not match "
                f"{arch.pretrained.sha256_prefix}; the download is corrupt (nothing was kept)"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {limits.brief(str(exc)).strip(chr(39))}"
        raise DownloadError(
            f"cannot download {url} ({reason}); download it elsewhere and pass the file: "
            f"vrconvert torch2keras {arch.pretrained.filename} OUT.keras"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
        if shown:  # wipe the unfinished progress line, so that an error is the only line left
            print("\r\033[K", end="", file=sys.stderr)
    return target
