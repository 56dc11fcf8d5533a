"""Versioned releases: the offline build, the manifest, the registry (channels) and loading.

Serving and batch jobs use `load` / `Release` (and the `Registry` for channel operations). The
`build` module imports training code (splits, evaluation, model registry) only inside `build()`, so
importing this package stays light.
"""

from __future__ import annotations

from recstack.release.build import BuildConfig, build
from recstack.release.loader import Release, load
from recstack.release.manifest import Manifest
from recstack.release.registry import ChannelState, PromotionRefusedError, Registry, ReleaseDiff

__all__ = [
    "BuildConfig",
    "ChannelState",
    "Manifest",
    "PromotionRefusedError",
    "Registry",
    "Release",
    "ReleaseDiff",
    "build",
    "load",
]
