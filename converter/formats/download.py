"""Fetching torchvision's pretrained Kinetics-400 checkpoints into torch's hub cache, hash checked."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

from vrconvert.converter.arch import spec
from vrconvert.converter.errors import DownloadError, InputError

# Tests (and mirrors) point this at another server; the file names stay torchvision's.
BASE_URL_ENV = "VRCONVERT_PRETRAINED_BASE_URL"


def hub_dir() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), without importing torch."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def url_for(arch: spec.Arch) -> str:
    if arch.pretrained is None:
        raise InputError(f"{arch.name} has no published pretrained weights")
    base = os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{arch.pretrained.filename}" if base else arch.pretrained.url


def fetch_pretrained(name: str, timeout: float = 20.0, progress: bool = True) -> Path:
    """The cached checkpoint for `name`, downloading it first if needed; its SHA-256 prefix is checked."""
    arch = spec.get(name)
    url = url_for(arch)
    target = hub_dir() / arch.pretrained.filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and total:
                    print(f"\rdownloading {arch.pretrained.filename}: {100 * done // total}%", end="", file=sys.stderr)
        if progress and total:
            print(file=sys.stderr)
        if not digest.hexdigest().startswith(arch.pretrained.sha256_prefix):
            raise DownloadError(
                f"{url}: SHA-256 {digest.hexdigest()[:8]}... does not match "
                f"{arch.pretrained.sha256_prefix}; the download is corrupt (nothing was kept)"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); download it elsewhere and pass the file: "
            f"vrconvert torch2keras {arch.pretrained.filename} OUT.keras"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
