"""Training loops that resume exactly where an interrupted run stopped."""
import itertools
import logging
from typing import Dict, Iterable, List, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import DataLoader

from mmdtm.registry import LOOPS
from mmdtm.upstream import (InfiniteDataloaderIterator, decide_val_interval,
                            release_loader_workers, set_loop_epoch)


def _skippable_sampler(loader: DataLoader):
    """The loader's sampler if it supports ``skip`` (else ``None``)."""
    sampler = getattr(loader, 'sampler', None)
    if not hasattr(sampler, 'skip'):
        sampler = getattr(getattr(loader, 'batch_sampler', None), 'sampler',
                          None)
    return sampler if hasattr(sampler, 'skip') else None


def _place_sampler(loader: DataLoader, epoch: int, batch: int,
                   step: int) -> bool:
    """Make the loader's next pass the one of ``epoch``, starting at batch
    ``batch`` (of iteration ``step``), without loading the skipped batches.

    Returns:
        ``False`` (and a warning) if the sampler cannot skip
        (not a :class:`~mmdtm.datasets.ResumableSampler`): the caller then
        loads and discards the batches, as MMEngine does.
    """
    sampler = _skippable_sampler(loader)
    if sampler is None:
        print_log(
            f'{type(loader.sampler).__name__} cannot skip: loading and '
            f'discarding {batch} batches to resume at iteration {step} (use '
            f'ResumableSampler for an exact, fast resume)', logger='current',
            level=logging.WARNING)
        return False
    batch_size = loader.batch_size or loader.batch_sampler.batch_size
    sampler.set_epoch(epoch)
    sampler.skip(batch * batch_size)
    print_log(f'Resuming at iteration {step}: sampler epoch {epoch}, '
              f'batch {batch} of {len(loader)}', logger='current')
    return True


def resumes_mid_epoch(loop) -> bool:
    """Whether a checkpoint written after any iteration of ``loop`` resumes
    exactly (``False`` for MMEngine's ``EpochBasedTrainLoop``, which
    resumes at epoch starts)."""
    return (not isinstance(loop, EpochBasedTrainLoop)
            or isinstance(loop, ResumableEpochBasedTrainLoop))


def _private_generator(loader: DataLoader) -> None:
    """Give the loader its own generator.

    Every ``iter(loader)`` draws a base seed; without a generator it comes
    from torch's global RNG, so a resumed run (which creates an iterator the
    uninterrupted run did not) would shift the global stream. The base seed
    only seeds worker processes, which MMEngine's ``worker_init_fn`` reseeds
    from (seed, rank, worker id) anyway.
    """
    if getattr(loader, 'generator', None) is None:
        loader.generator = torch.Generator().manual_seed(0)


class _CyclingIterator(InfiniteDataloaderIterator):
    """MMEngine's ``_InfiniteDataloaderIterator`` without its fixed 2 s pause
    (and warning) at every epoch switch when the loader has no worker
    processes: the pause guards against a worker deadlock; without workers
    it only costs time (2 s per pass over a small dataset)."""

    def __next__(self):
        if self.dataloader.num_workers > 0:
            return super().__next__()
        try:
            return next(self.iterator)
        except StopIteration:
            self.epoch += 1
            sampler = getattr(self.dataloader, 'sampler', None)
            if not hasattr(sampler, 'set_epoch'):
                sampler = getattr(
                    getattr(self.dataloader, 'batch_sampler', None),
                    'sampler', None)
            if hasattr(sampler, 'set_epoch'):
                sampler.set_epoch(self.epoch)
            self.iterator = iter(self.dataloader)
            return next(self.iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes at the exact batch, fast.

    On resume at iteration ``n``, MMEngine loads and discards ``n`` batches
    to reach the data position: slow for a long run, and it consumes the
    augmentation RNG that :class:`~mmdtm.engine.SafeCheckpointHook` has
    just restored. This loop sets the sampler's epoch and position directly
    (``n // len(loader)`` and the batch within that epoch) and loads
    nothing. Needs a sampler with ``skip``
    (:class:`~mmdtm.datasets.ResumableSampler`); other samplers fall back to
    MMEngine's behaviour with a warning. It also gives the loader a private
    generator (see :func:`_private_generator`), so that creating the extra
    iterator does not shift torch's global RNG.

    Args: as ``IterBasedTrainLoop``.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_iters: int,
                 val_begin: int = 1,
                 val_interval: int = 1000,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None
                 ) -> None:
        super().__init__(runner, dataloader, max_iters, val_begin,
                         val_interval, dynamic_intervals)
        _private_generator(self.dataloader)
        self.dataloader_iterator = _CyclingIterator(self.dataloader)

    def _fast_forward(self, step: int) -> None:
        """Place the data iterator at the batch of iteration ``step``."""
        loader = self.dataloader
        epoch, batch = divmod(step, len(loader))
        if not _place_sampler(loader, epoch, batch, step):
            for _ in range(step):
                next(self.dataloader_iterator)
            return
        self.dataloader_iterator.epoch = epoch
        self.dataloader_iterator.iterator = iter(loader)

    def run(self) -> torch.nn.Module:
        """Launch training: MMEngine's ``run`` except that a resumed run
        places the sampler (:meth:`_fast_forward`) instead of loading the
        skipped batches, and the data workers stop when training ends or
        fails."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self.iter > 0:
            self._fast_forward(self.iter)
        try:
            while self.iter < self.max_iters and not self.stop_training:
                self.runner.model.train()
                data_batch = next(self.dataloader_iterator)
                self.run_iter(data_batch)

                decide_val_interval(self)
                if (self.runner.val_loop is not None
                        and self.iter >= self.val_begin
                        and (self.iter % self.val_interval == 0
                             or self.iter == self.max_iters)):
                    self.runner.val_loop.run()
        except BaseException:
            self._release_workers()  # e.g. a data worker died: stop the rest
            raise

        self.runner.call_hook('after_train_epoch')
        self._release_workers()
        self.runner.call_hook('after_train')
        return self.runner.model

    def _release_workers(self) -> None:
        """Stop the data workers now that training is over.

        MMEngine leaves the live iterator to the garbage collector, whose
        worker shutdown then waits about 10 s.
        """
        release_loader_workers(self.dataloader_iterator.iterator,
                               self.dataloader)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that also resumes in the middle of an epoch.

    MMEngine resumes an epoch-based run at the start of the checkpoint's
    epoch, so a checkpoint written after iteration ``n`` in the middle of
    epoch ``e`` (``meta``: ``epoch=e, iter=n``, as
    :meth:`SafeCheckpointHook.save_now` writes on pre-emption) would train
    that epoch's first batches again. This loop continues epoch ``e`` at
    batch ``n - e * len(loader)`` instead: the sampler skips the samples
    already seen (:class:`~mmdtm.datasets.ResumableSampler`; other samplers
    load and discard the batches, with a warning) and the ``batch_idx``
    given to the hooks goes on from there, so the run is bit-identical to
    an uninterrupted one. A checkpoint of the epoch's last iteration
    resumes with an empty rest of the epoch, so that its
    ``after_train_epoch`` (epoch-based schedulers, the epoch's checkpoint,
    validation) still runs. Otherwise the loop is MMEngine's; it also gives
    the loader a private generator (see :func:`_private_generator`), so
    that the iterator a resumed epoch creates does not shift torch's
    global RNG.

    Args: as ``EpochBasedTrainLoop``.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_epochs: int,
                 val_begin: int = 1,
                 val_interval: int = 1,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None
                 ) -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin,
                         val_interval, dynamic_intervals)
        _private_generator(self.dataloader)

    def _start_batch(self) -> int:
        """The batch of the current epoch that comes next (0 unless the run
        resumed from a checkpoint written in the middle of this epoch)."""
        start = self.iter - self.epoch * len(self.dataloader)
        if not 0 <= start <= len(self.dataloader):
            raise ValueError(
                f'ResumableEpochBasedTrainLoop: the checkpoint\'s iteration '
                f'{self.iter} does not lie in its epoch {self.epoch} of '
                f'{len(self.dataloader)} batches (did the dataset or the '
                f'batch size change since it was written?)')
        return start

    def _batches(self, start: int) -> Iterable:
        """The current epoch's batches from batch ``start`` on."""
        if start == len(self.dataloader):
            return ()
        if start == 0 or _place_sampler(self.dataloader, self.epoch, start,
                                        self.iter):
            return self.dataloader
        return itertools.islice(self.dataloader, start, None)

    def run_epoch(self) -> None:
        """Iterate the rest of one epoch (all of it unless resumed in its
        middle)."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        start = self._start_batch()
        for idx, data_batch in enumerate(self._batches(start), start):
            self.run_iter(idx, data_batch)

        self.runner.call_hook('after_train_epoch')
        set_loop_epoch(self, self.epoch + 1)
