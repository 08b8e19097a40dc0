"""The training loss of a run, read from MMEngine's scalar log and drawn."""
import json
import os.path as osp
from typing import Dict


def read_losses(log_dir: str) -> Dict[int, float]:
    """{iteration: loss} from MMEngine's ``vis_data/scalars.json``."""
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    losses = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            if 'loss' in entry:
                losses[int(entry['step'])] = float(entry['loss'])
    return losses


def plot_losses(losses: Dict[int, float], out_file: str,
                title: str) -> None:
    """Loss against iteration, with a running mean when there are many."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps = sorted(losses)
    values = [losses[s] for s in steps]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(steps, values, lw=1, alpha=0.6,
            label='loss (logged: mean since the previous log)')
    window = max(1, len(values) // 10)
    if window > 1:
        smooth = [sum(values[max(0, i - window + 1):i + 1]) /
                  len(values[max(0, i - window + 1):i + 1])
                  for i in range(len(values))]
        ax.plot(steps, smooth, lw=2, label=f'running mean ({window})')
    ax.set_xlabel('iteration')
    ax.set_ylabel('DTM loss (smooth-L1)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)
