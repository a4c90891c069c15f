"""sample.py on a model that has learned something: the whole chain at tiny sizes (render.py rooms with the KEMAR
head, noise sources, make_qa.py, train_encoder.py, train_bat.py), then sample.py asked where a held-out clip is,
placed by eval-room IRs it never trained on, says "left" for the sources on the left and "right" for those on the
right. The expected side comes from the IR's geometry (the source's x against the listener's), not from our tables."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import script_hooks as hooks

ROOT = Path(__file__).resolve().parents[1]
SR = 32000
pytestmark = pytest.mark.usefixtures('one_thread')


run = hooks.run_ok  # `python <args>` in this process, must succeed: its stdout


def noise_sources(folder, n_train=8, n_eval=2):
    """Coloured noises (one label: the test is about where, not what), 0.5 s each, as sources.jsonl."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    recs = []
    for k in range(n_train + n_eval):
        x = rng.standard_normal(SR // 2)
        x = np.convolve(x, rng.standard_normal(8) / 4, 'same')  # a different spectral tilt per clip
        sf.write(folder / f'n{k}.wav', (0.1 * x / x.std()).astype(np.float32), SR)
        recs.append({'path': f'n{k}.wav', 'labels': ['Noise'], 'split': 'train' if k < n_train else 'eval'})
    (folder / 'sources.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    return folder / 'sources.jsonl'


def test_sample_says_left_for_a_source_on_the_left(tmp_path):
    rirs, qa, enc, bat = (tmp_path / d for d in ('rirs', 'qa', 'enc', 'bat'))
    run('render.py', f'--out_dir={rirs}', '--n_train_rooms=4', '--n_eval_rooms=1', '--irs_per_room=16',
        '--ir_seconds=0.1', '--max_order=1', '--tail=False', '--rt60_max=0.5', '--device=cpu')
    sources = noise_sources(tmp_path / 'sources')
    run('make_qa.py', f'--sources={sources}', f'--render_dir={rirs}', f'--out_dir={qa}',
        "--train_counts={'DOA': 400}", "--eval_counts={'DOA': 16}")
    run('train_encoder.py', f'--sources={sources}', f'--render_dir={rirs}', f'--out_dir={enc}', '--device=cpu',
        '--clip_seconds=0.5', '--rir_seconds=0.1', '--n_frames=48', '--dim=32', '--depth=1', '--n_heads=2',
        '--stem_channels=4', '--ipd_scale=100.0', '--mixup_prob=0.0', '--mask_t_prob=0.0', '--mask_f_prob=0.0',
        '--drop_path=0.0', '--time_mask=0', '--freq_mask=0', '--w_class=1.0', '--sigma_deg=10.0',
        '--batch_size=16', '--learning_rate=3e-3', '--warmup_iters=5', '--max_iters=80', '--eval_interval=80',
        '--eval_items=16', '--log_interval=50')
    run('train_bat.py', f'--qa_dir={qa}', f'--encoder_ckpt={enc / "ckpt.pt"}', f'--out_dir={bat}', '--stages=1',
        '--stage_iters=[120]', '--clip_seconds=0.5', '--llm_dim=48', '--llm_layers=1', '--llm_heads=2',
        '--vocab_size=128', '--qformer_layers=1', '--n_query=4', '--qformer_dim=32', '--qformer_heads=2',
        '--qformer_ffn=64', '--batch_size=16', '--learning_rate=3e-3', '--warmup_iters=10', '--eval_interval=120',
        '--eval_iters=1', '--log_interval=50', '--device=cpu', '--threads=1')
    clip = tmp_path / 'sources' / 'n9.wav'  # an eval clip: never heard in training
    for side, ir in most_lateral(rirs).items():  # eval-room IRs: never heard in training
        out = run('sample.py', f'--ckpt={bat / "ckpt.pt"}', f'--clip={clip}', f'--rir={ir}',
                  '--question=Where is the sound coming from?', '--device=cpu')
        assert out.strip().splitlines()[-1].startswith(f'answer: {side}'), (side, ir, out[-500:])


def most_lateral(rirs):
    """The eval IR furthest to each side, by its geometry: x of the source minus x of the listener (Habitat axes,
    listener facing -Z: +x is the right), over the distance."""
    best = {}
    for line in (rirs / 'eval_reverberation.jsonl').read_text().splitlines():
        r = json.loads(line)
        d = np.array(r['source_position'].split(','), float) - np.array(r['sensor_position'].split(','), float)
        lateral = d[0] / np.linalg.norm(d)
        side = 'left' if lateral < 0 else 'right'
        if abs(lateral) > best.get(side, (0, None))[0]:
            best[side] = (abs(lateral), rirs / 'binaural' / r['fname'])
    assert set(best) == {'left', 'right'}
    return {side: ir for side, (_, ir) in best.items()}
