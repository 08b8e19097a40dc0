"""Shorter runs of an iteration-based config (the demo, the tests)."""
from mmengine.config import Config


def shorten_schedule(cfg: Config, iters: int) -> Config:
    """Shorten ``cfg`` to ``iters`` training iterations, in place.

    The config's schedule must be the recipe's: a warm-up scheduler over
    iterations ``[0, w)``, then one decay scheduler over ``[w, max_iters)``.
    The warm-up keeps its share of the run, ``w * iters // max_iters``
    iterations (at least one); the decay runs from there to ``iters`` (at
    least one iteration long).

    Args:
        cfg: a config with ``train_cfg.max_iters`` and that
            ``param_scheduler``.
        iters: the new number of training iterations, >= 1.

    Returns:
        ``cfg``.

    Examples:
        >>> cfg = Config(dict(train_cfg=dict(max_iters=300), param_scheduler=[
        ...     dict(type='LinearLR', by_epoch=False, begin=0, end=30),
        ...     dict(type='CosineAnnealingLR', by_epoch=False, begin=30,
        ...          end=300)]))
        >>> [(s.begin, s.end) for s in
        ...  shorten_schedule(cfg, 40).param_scheduler]
        [(0, 4), (4, 40)]
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f'iters must be an int >= 1, got {iters!r}')
    max_iters = cfg.get('train_cfg', {}).get('max_iters')
    if not max_iters:
        raise ValueError('train_cfg.max_iters is not set: shorten_schedule '
                         'shortens iteration-based configs only')
    schedulers = cfg.get('param_scheduler')
    if not (isinstance(schedulers, (list, tuple)) and len(schedulers) == 2
            and not any(s.get('by_epoch', True) for s in schedulers)
            and schedulers[0].get('begin', 0) == 0
            and schedulers[0].get('end') == schedulers[1].get('begin')
            and schedulers[1].get('end') == max_iters):
        raise ValueError(
            f'param_scheduler must be a warm-up over iterations [0, w) then '
            f'one decay over [w, train_cfg.max_iters={max_iters}) (both '
            f'by_epoch=False) to be shortened; got {schedulers!r}')
    warmup = max(1, schedulers[0]['end'] * iters // max_iters)
    cfg.train_cfg.max_iters = iters
    schedulers[0]['end'] = schedulers[1]['begin'] = warmup
    schedulers[1]['end'] = max(iters, warmup + 1)
    return cfg
