"""The spatial-consistency probe of the DTM paper's pilot study: per-token
zero-shot predictions of a CLIP teacher, with and without morphing."""
from .consistency import majority_vote, neighbour_agreement, token_accuracy
from .spatial_consistency import (format_table, morphed_predictions,
                                  probe_picture, run_probe, score_probe)

__all__ = ['majority_vote', 'neighbour_agreement', 'token_accuracy',
           'format_table', 'morphed_predictions', 'probe_picture', 'run_probe',
           'score_probe']
