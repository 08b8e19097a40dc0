"""mmdtm -> downstream and reference -> mmdtm conversion."""
import argparse

import pytest
import torch

from mmdtm.checkpoint import (CheckpointMismatchError, dtm_to_backbone,
                              reference_to_mmdtm, resize_rel_pos_table,
                              window_of_table)

from tests.tiny_backbones import pretrain_state, tiny_downstream


def test_folded_bias_gives_the_students_exact_features(student):
    """per-block + shared in one table == the student's two tables."""
    state = pretrain_state(student)
    backbone = dtm_to_backbone(state, keep_final_norm=True)
    assert 'rel_pos_bias.relative_position_bias_table' not in backbone
    assert 'mask_token' not in backbone
    shared = state['backbone.rel_pos_bias.relative_position_bias_table']
    for i in range(2):
        key = f'layers.{i}.attn.relative_position_bias_table'
        torch.testing.assert_close(backbone[key],
                                   state[f'backbone.{key}'] + shared)
    down = tiny_downstream(final_norm=True, out_type='raw')
    result = down.load_state_dict(backbone, strict=False)
    assert not result.unexpected_keys
    assert all('relative_position_index' in k for k in result.missing_keys)
    x = torch.randn(2, 3, 64, 64)
    student.eval(), down.eval()
    with torch.no_grad():
        torch.testing.assert_close(down(x)[0], student(x, None)[0])


def test_fine_tuning_drops_final_norm_and_linear_probing_keeps_it(student):
    state = pretrain_state(student)
    assert not any(k.startswith('ln1.') for k in dtm_to_backbone(state))
    assert 'ln1.weight' in dtm_to_backbone(state, keep_final_norm=True)


def test_conversion_refuses_foreign_checkpoints(student):
    with pytest.raises(CheckpointMismatchError, match='no key starts with'):
        dtm_to_backbone({'encoder.cls_token': torch.zeros(1)})
    state = pretrain_state(student)
    state['decoder.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r'decoder\.weight'):
        dtm_to_backbone(state)


def test_resize_rel_pos_table():
    table = torch.randn(7 * 7 + 3, 2)  # window 4x4
    assert window_of_table(table.shape[0]) == (4, 4)
    assert resize_rel_pos_table(table, (4, 4)) is table
    big = resize_rel_pos_table(table, (6, 6))
    assert big.shape == (11 * 11 + 3, 2)
    torch.testing.assert_close(big[-3:], table[-3:])  # class entries kept
    # a constant grid stays constant; the centre (offset 0) is preserved
    const = torch.ones(7 * 7 + 3, 2)
    torch.testing.assert_close(resize_rel_pos_table(const, (6, 6)),
                               torch.ones(124, 2))
    centre = table[:-3].reshape(7, 7, 2)[3, 3]
    torch.testing.assert_close(big[:-3].reshape(11, 11, 2)[5, 5], centre,
                               rtol=0.2, atol=0.2)
    with pytest.raises(CheckpointMismatchError, match='not'):
        window_of_table(50)


def _reference_from(student, neck_w, neck_b) -> dict:
    """A checkpoint laid out as the reference implementation writes it."""
    sd = student.state_dict()
    ref = {'patch_embed.proj.weight': sd['patch_embed.projection.weight'],
           'patch_embed.proj.bias': sd['patch_embed.projection.bias'],
           'cls_token': sd['cls_token'], 'mask_token': sd['mask_token'],
           'rel_pos_bias.relative_position_bias_table':
               sd['rel_pos_bias.relative_position_bias_table'],
           'rel_pos_bias.relative_position_index':
               sd['rel_pos_bias.relative_position_index'],
           'norm.weight': sd['ln1.weight'], 'norm.bias': sd['ln1.bias'],
           'lm_head.weight': neck_w, 'lm_head.bias': neck_b}
    names = {'norm1': 'ln1', 'norm2': 'ln2', 'mlp.fc1': 'ffn.layers.0.0',
             'mlp.fc2': 'ffn.layers.1', 'attn.proj': 'attn.proj'}
    for i in range(2):
        p = f'layers.{i}.'
        for ref_name, ours in names.items():
            for t in ('weight', 'bias'):
                ref[f'blocks.{i}.{ref_name}.{t}'] = sd[f'{p}{ours}.{t}']
        for name in ('attn.qkv.weight', 'attn.q_bias', 'attn.v_bias',
                     'attn.relative_position_bias_table',
                     'attn.relative_position_index', 'gamma_1', 'gamma_2'):
            ref[f'blocks.{i}.{name}'] = sd[p + name]
    return ref


def test_reference_checkpoint_converts_to_mmdtm_exactly(student):
    neck_w, neck_b = torch.randn(32, 64), torch.randn(32)
    ref = _reference_from(student, neck_w, neck_b)
    ref['teacher.visual.proj'] = torch.zeros(1)
    out = reference_to_mmdtm(ref, skip_prefixes=['teacher.'])
    expected = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    expected.update({'neck.proj.weight': neck_w, 'neck.proj.bias': neck_b})
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert torch.equal(out[key], value), key


def test_reference_conversion_lists_missing_and_unmapped_keys(student):
    ref = _reference_from(student, torch.randn(32, 64), torch.randn(32))
    del ref['blocks.1.mlp.fc2.weight'], ref['norm.bias']
    ref['blocks.0.attn.k_bias'] = torch.zeros(64)
    with pytest.raises(CheckpointMismatchError) as err:
        reference_to_mmdtm(ref)
    msg = str(err.value)
    for key in ('blocks.1.mlp.fc2.weight', 'norm.bias',
                'blocks.0.attn.k_bias'):
        assert key in msg


def test_reference_cli_checks_against_a_pretraining_config(student, tmp_path,
                                                           capsys):
    from mmdtm.checkpoint.cli import (dtm_to_downstream_main,
                                         reference_to_mmdtm_main)
    from tests.conftest import TOY_CFG
    from .test_checked_init import _downstream_config
    src, dst = str(tmp_path / 'ref.pth'), str(tmp_path / 'mmdtm.pth')
    ref = _reference_from(student, torch.randn(32, 64), torch.randn(32))
    # training scripts save their argparse.Namespace next to the weights
    torch.save({'model': ref, 'epoch': 299,
                'args': argparse.Namespace(lr=1.5e-3)}, src)
    assert reference_to_mmdtm_main([src, dst, '--config', TOY_CFG]) == 0
    assert 'loaded 41/41' in capsys.readouterr().out  # 9 + 2 x 16
    # and on to a downstream backbone
    down = str(tmp_path / 'down.pth')
    assert dtm_to_downstream_main(
        [dst, down, '--config', _downstream_config(tmp_path)]) == 0
    # a head of the wrong width does not match the config: exit 1
    ref['lm_head.weight'] = torch.randn(16, 64)
    torch.save({'model': ref}, src)
    assert reference_to_mmdtm_main(
        [src, str(tmp_path / 'x.pth'), '--config', TOY_CFG]) == 1
    assert 'neck.proj.weight: checkpoint (16, 64) vs model (32, 64)' in \
        capsys.readouterr().out
    # other pickled objects are refused unless the user trusts the file
    ref['lm_head.weight'] = torch.randn(32, 64)
    torch.save({'model': ref, 'extra': _Opaque()}, src)
    assert reference_to_mmdtm_main([src, str(tmp_path / 'y.pth')]) == 1
    assert '--trusted' in capsys.readouterr().err
    assert reference_to_mmdtm_main(
        [src, str(tmp_path / 'y.pth'), '--trusted']) == 0


class _Opaque:
    """An object ``weights_only`` loading does not allow."""
