"""Dynamic Token Morphing: matching, partition, group means, schedule."""
from .compiled import compiled_morph, compiled_partition
from .partition import (bipartite_partition, count_groups, group_mean,
                        group_sizes, partition_plan, realised_groups,
                        round_cap, static_partition)
from .schedule import (MorphLevel, check_levels, level_rounds,
                       sample_schedule, step_generator)

__all__ = [
    'bipartite_partition', 'group_mean', 'group_sizes', 'count_groups',
    'round_cap',
    'compiled_morph', 'compiled_partition', 'partition_plan',
    'static_partition',
    'MorphLevel', 'check_levels', 'level_rounds', 'realised_groups',
    'sample_schedule', 'step_generator'
]
