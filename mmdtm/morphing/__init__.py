"""Dynamic Token Morphing: matching, partition, group means, schedule."""
from .partition import (bipartite_partition, group_mean, group_sizes,
                        num_groups)
from .schedule import (MorphLevel, check_levels, level_rounds,
                       realised_groups, sample_schedule, step_generator)

__all__ = [
    'bipartite_partition', 'group_mean', 'group_sizes', 'num_groups',
    'MorphLevel', 'check_levels', 'level_rounds', 'realised_groups',
    'sample_schedule', 'step_generator'
]
