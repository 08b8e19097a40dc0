"""Everything about checkpoint files: reading the tensors (``io``), the one
key comparison and error (``compare``), relative position tables
(``rel_pos``), conversion (``convert``), checked ``init_cfg`` loading
(``checked_init``), integrity (``integrity``), the one answer to which
checkpoint a run resumes from (``resume``), atomic writes (``atomic``),
torch.load compatibility (``compat``), offline URLs (``url``), the one
explicit process-wide set-up (``process``) and the converters' command
lines (``cli``)."""
from .checked_init import (CheckedInitMixin, CheckedPretrainedInit,
                           load_backbone_checked)
from .compare import (CheckpointMismatchError, KeyReport, compare_state_dict,
                      format_keys)
from .compat import checkpoint_safe_globals, register_safe_globals
from .convert import dtm_to_backbone, reference_to_mmdtm
from .integrity import checkpoint_problem
from .resume import (NoValidCheckpointError, check_explicit_resume,
                     checkpoint_dir, checkpoint_layout, choose_resume,
                     config_resume_candidates, newest_valid_checkpoint,
                     resume_candidates)
from .io import load_checkpoint_file, state_dict_of
from .process import setup_checkpoint_loading
from .rel_pos import resize_rel_pos_table, window_of_table
from .url import CheckpointDownloadError, register_url_loader, url_cache_path

__all__ = [
    'CheckedInitMixin', 'CheckedPretrainedInit', 'load_backbone_checked',
    'CheckpointMismatchError', 'KeyReport', 'compare_state_dict',
    'format_keys', 'checkpoint_safe_globals', 'register_safe_globals',
    'setup_checkpoint_loading', 'dtm_to_backbone',
    'reference_to_mmdtm', 'NoValidCheckpointError', 'checkpoint_problem',
    'newest_valid_checkpoint', 'resume_candidates', 'check_explicit_resume',
    'checkpoint_dir', 'checkpoint_layout', 'choose_resume',
    'config_resume_candidates', 'load_checkpoint_file',
    'state_dict_of', 'resize_rel_pos_table', 'window_of_table',
    'CheckpointDownloadError', 'register_url_loader', 'url_cache_path'
]
