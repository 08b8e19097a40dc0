"""Checkpoints from a URL or a local path, with a clear error when offline.

MMEngine already loads ``load_from`` / ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` from ``http(s)://`` URLs into torch's hub cache. Offline it
fails with a bare ``URLError``. :func:`register_url_loader` (called by
``import mmdtm``) replaces MMEngine's http(s) loader by one that raises
:class:`CheckpointDownloadError` naming the URL and the exact file to place
so that the next run finds it without network.
"""
import os
import os.path as osp
from typing import Optional
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from mmengine.runner.checkpoint import CheckpointLoader, load_from_http

URL_PREFIXES = ('http://', 'https://')


class CheckpointDownloadError(URLError):
    """A checkpoint URL could not be downloaded (offline, refused, 404).

    A ``URLError`` (so an ``OSError``), like what MMEngine's own loader
    raises, so that code catching those behaves as without mmdtm; only the
    message is ours. ``reason`` is the original error.
    """

    def __init__(self, message: str, reason: BaseException) -> None:
        super().__init__(reason)
        self.message = message

    def __str__(self) -> str:
        return self.message


def url_cache_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where a checkpoint URL is cached: ``<torch hub dir>/checkpoints/<name>``.

    A file placed there is used without network (``TORCH_HOME`` moves it).
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def load_from_url(filename: str,
                  map_location=None,
                  model_dir: Optional[str] = None,
                  progress: bool = os.isatty(0)) -> dict:
    """MMEngine's http(s) checkpoint loader with an actionable offline error.

    Args:
        filename: an ``http://`` or ``https://`` URL.
        map_location: as in ``torch.load``.
        model_dir: download cache; default ``<torch hub dir>/checkpoints``.

    Raises:
        CheckpointDownloadError: the URL cannot be reached; the message names
            the URL and where to put the file.
    """
    try:
        return load_from_http(filename, map_location=map_location,
                              model_dir=model_dir, progress=progress)
    except OSError as err:  # URLError, HTTPError, refused, timeouts
        target = url_cache_path(filename, model_dir)
        raise CheckpointDownloadError(
            f'cannot download checkpoint {filename} ({type(err).__name__}: '
            f'{err}). Offline? Download it on a machine that is online and '
            f'put it at {target} (it is then used without network), or '
            f'give a local path instead of the URL (load_from=... or '
            f"init_cfg=dict(type='Pretrained', checkpoint=...)).",
            err) from err


def register_url_loader() -> None:
    """Make MMEngine load ``http(s)://`` checkpoints through
    :func:`load_from_url`."""
    CheckpointLoader.register_scheme(
        prefixes=URL_PREFIXES, loader=load_from_url, force=True)
