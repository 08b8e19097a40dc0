"""Image loading that names the bad file, or skips it on request."""
import logging
from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log

from mmdtm.registry import TRANSFORMS

ON_ERROR = ('raise', 'skip')


class CorruptImageError(RuntimeError):
    """An image file is missing, truncated or cannot be decoded."""


@TRANSFORMS.register_module()
class SafeLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` with a clear error or a counted skip.

    MMCV's loader raises whatever the file backend or decoder raised (or a
    bare ``AssertionError`` when the decoder returns nothing, which
    ``python -O`` even removes). This one raises
    :class:`CorruptImageError` naming the file and the cause, or, with
    ``on_error='skip'``, returns ``None``: MMEngine's ``BaseDataset`` then
    draws another sample (up to its ``max_refetch``). Skips are counted per
    process (``num_skipped``) and each is logged with the file name and the
    count so far.

    Args:
        on_error: ``'raise'`` (default) or ``'skip'``.
        Others as MMCV's ``LoadImageFromFile``.
    """

    def __init__(self, *args, on_error: str = 'raise', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if on_error not in ON_ERROR:
            raise ValueError(f'SafeLoadImageFromFile: on_error must be one of '
                             f'{ON_ERROR}, got {on_error!r}')
        self.on_error = on_error
        self.num_skipped = 0

    def transform(self, results: dict) -> Optional[dict]:
        filename = results.get('img_path', '<no img_path>')
        try:
            out = super().transform(results)
            if out is None:  # ignore_empty=True and the file is missing
                raise FileNotFoundError('missing or empty file')
            return out
        except Exception as err:  # noqa: BLE001 (re-raised with the name)
            cause = ('decoder returned no image' if isinstance(
                err, AssertionError) else f'{type(err).__name__}: {err}')
            if self.on_error == 'raise':
                raise CorruptImageError(
                    f'cannot load image {filename} ({cause}). Replace or '
                    f'remove the file, or set on_error=\'skip\' in the '
                    f'pipeline\'s SafeLoadImageFromFile to skip bad '
                    f'images.') from err
            self.num_skipped += 1
            print_log(f'SafeLoadImageFromFile: skipped {filename} ({cause}); '
                      f'{self.num_skipped} image(s) skipped so far in this '
                      f'process', logger='current', level=logging.WARNING)
            return None

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", on_error='{self.on_error}')"
