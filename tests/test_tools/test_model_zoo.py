"""configs/dtm/metafile.yml: MMPretrain's format, honest, complete."""
import glob
import os.path as osp

from modelindex.load_model_index import load

from ..conftest import REPO


def _models():
    index = load(osp.join(REPO, 'model-index.yml'))
    index.build_models_with_collections()
    return index.models


def test_metafile_lists_every_config_honestly():
    models = _models()
    names = {m.name for m in models}
    configs = {m.config for m in models}
    shipped = {osp.relpath(p, REPO) for pattern in (
        'configs/dtm/dtm_beit-*.py', 'configs/dtm/benchmarks/*.py',
        'configs/ade20k/*.py') for p in glob.glob(osp.join(REPO, pattern))}
    assert shipped <= configs, f'not in metafile.yml: {shipped - configs}'
    readme = open(osp.join(REPO, 'README.md')).read()
    zoo = readme[readme.index('## Model zoo'):]
    for m in models:
        assert osp.isfile(osp.join(REPO, m.config)), m.config
        assert osp.splitext(osp.basename(m.config))[0] == m.name
        assert f'`{m.config}`' in zoo, f'{m.config} not in the README zoo'
        assert m.in_collection == 'DTM'
        # nothing published, nothing measured: no invented results
        assert m.weights is None and not m.results, m.name
        assert 'not yet released' in m.data['Weights Location']
        for down in m.data.get('Downstream', []):
            assert down in names, down
        for result in m.data.get('Paper Results') or []:
            assert 'not reproduced' in result['Source']
    paper = {m.name: m.data['Paper Results'][0]['Metrics']['Top 1 Accuracy']
             for m in models if m.data.get('Paper Results')}
    assert paper == {'vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k': 85.4,
                     'vit-large-p16_dtm-pre_8xb128-amp-coslr-50e_in1k': 86.7}
