"""Smoke test of the whole BAT chain at tiny sizes on hand-made data: train_bat.py through the 3 stages, exact
resume, eval.py writing every metric key, sample.py answering, and a 2-process torchrun (gloo) CPU run."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import script_hooks as hooks

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLASSES = ['Bark', 'Music', 'Speech']
SR = 32000
CLIP = 0.5  # seconds


def words(d):
    return f"{d[0]}, {d[1]}, {d[2]}"


def make_tiny(root):
    """4 dry clips, 4 IRs, QA items of every type with answers in our formats, meta.json, a tiny encoder checkpoint."""
    import soundfile as sf
    import spatial_ast
    rng = np.random.default_rng(0)
    src, rev = root / 'sources', root / 'rirs' / 'binaural'
    (src / 'clips').mkdir(parents=True)
    (rev / 'room0').mkdir(parents=True)
    t = np.arange(int(SR * CLIP)) / SR
    for k in range(4):
        sf.write(src / 'clips' / f'{k}.wav', (0.3 * np.sin(2 * np.pi * 300 * (k + 1) * t)).astype(np.float32), SR)
        ir = np.zeros((2, 200), np.float32)
        ir[0, 5 + 20 * k], ir[1, 5 + 40 * (3 - k)] = 1.0, 0.7  # interaural delay differs per IR
        np.save(rev / 'room0' / f'{k}.npy', ir + 0.01 * rng.standard_normal((2, 200)).astype(np.float32))
    dirs = [('left', 'front', 'above'), ('right', 'behind', 'below'), ('left', 'behind', 'above'), ('right', 'front', 'below')]
    dist = ['1m', '2.5m', '4m', '1.5m']
    recs = []
    for k in range(4):
        lab = CLASSES[k % 3]
        where = lambda j: {'labels': [CLASSES[j % 3]], 'azimuth': 90 * j, 'elevation': 10 * j, 'distance': 1.0 + j}
        one = {'audio_id': f'clips/{k}.wav', 'reverb_id': f'room0/{k}.npy', 'audio_id2': None, 'reverb_id2': None,
               'targets': [where(k)]}
        two = {**one, 'audio_id2': f'clips/{(k + 1) % 4}.wav', 'reverb_id2': f'room0/{(k + 1) % 4}.npy',
               'targets': [where(k), where(k + 1)]}
        recs += [{**one, 'question_type': 'CLASSIFICATION', 'question': 'Identify the sound events.', 'answer': lab},
                 {**one, 'question_type': 'DOA', 'question': 'Where is the sound?', 'answer': f'{words(dirs[k])}; {dist[k]}'},
                 {**two, 'question_type': 'MIXUP_SINGLE_CLASSIFICATION', 'question': 'What is on the left?', 'answer': lab},
                 {**two, 'question_type': 'MIXUP_SINGLE_DOA', 'question': f'Where is the {lab}?',
                  'answer': f'{words(dirs[k])}; {dist[k]}'},
                 {**two, 'question_type': 'MIXUP_DIRECTION', 'question': f'Is the {lab} left of the {CLASSES[(k + 1) % 3]}?',
                  'answer': 'Yes' if k % 2 else 'No'},
                 {**two, 'question_type': 'MIXUP_DISTANCE_BOTH', 'question': f'Is the {CLASSES[(k + 1) % 3]} nearer than '
                  f'the {lab}?', 'answer': 'No' if k % 2 else 'Yes'},
                 {**two, 'question_type': 'MIXUP_NONBINARY_DISTANCE', 'question': 'How far apart?', 'answer': dist[k]}]
    qa = root / 'qa'
    qa.mkdir()
    for i, r in enumerate(recs):
        r['question_id'] = i
    for split in ('train', 'eval'):
        (qa / f'{split}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    (qa / 'meta.json').write_text(json.dumps({'audio_root': str(src), 'reverb_root': str(rev), 'classes': CLASSES}))
    args = spatial_ast.ModelArgs(n_frames=64, patch=16, dim=24, depth=1, n_heads=2, n_classes=3, drop_path=0.0)
    torch.manual_seed(0)
    enc = spatial_ast.SpatialAST(args)
    (root / 'enc').mkdir()
    torch.save({'model': enc.state_dict(), 'model_args': asdict(args), 'classes': CLASSES, 'config': {}},
               root / 'enc' / 'ckpt.pt')
    return qa, root / 'enc' / 'ckpt.pt'


TINY = ['--clip_seconds=0.5', '--llm_dim=32', '--llm_layers=1', '--llm_heads=2', '--vocab_size=200',
        '--qformer_layers=2', '--n_query=4', '--qformer_dim=24', '--qformer_heads=2', '--qformer_ffn=48',
        '--batch_size=4', '--eval_interval=2', '--eval_iters=1', '--log_interval=1', '--device=cpu',
        '--learning_rate=1e-3', '--warmup_iters=1', '--encode_batch_size=8', '--threads=1']


def run(args, env=None):
    """`python <args>`: torchrun and tests/script_hooks.py in a subprocess, a stage script in this process."""
    if args[1] in ('-m', 'tests/script_hooks.py'):
        p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    else:
        p = hooks.run_here(*args[1:])
    assert p.returncode == 0, f"{args[:3]} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp('bat'))


def test_train_resume_eval_sample(tiny, tmp_path):
    qa, enc = tiny
    common = [PY, 'train_bat.py', f'--qa_dir={qa}', f'--encoder_ckpt={enc}', '--stage_iters=[2,2,3]'] + TINY
    full, parts = tmp_path / 'full', tmp_path / 'parts'
    out = run(common + [f'--out_dir={full}'])
    assert 'stage 3 iter 3/3' in out and '=== stage 2/3' in out
    ck = torch.load(full / 'ckpt.pt', weights_only=True)
    assert ck['stage'] == 3 and ck['iter_num'] == 7
    assert any(k.startswith('projector.') for k in ck['model']) and any(k.startswith('llm.') for k in ck['model'])
    # the same run, stopped in stage 2 and resumed, ends on the same weights
    out = run(common + [f'--out_dir={parts}', '--stop_after=3'])
    assert 'stopped at stage 2 iter 1' in out
    out = run(common + [f'--out_dir={parts}', '--init_from=resume'])
    assert 'resumed' in out and 'cache hit' in out
    ck2 = torch.load(parts / 'ckpt.pt', weights_only=True)
    for k, v in ck['model'].items():
        assert torch.equal(v, ck2['model'][k]), k
    # eval writes every metric key, for the model and the random answerer
    ev = tmp_path / 'eval'
    out = run([PY, 'eval.py', f'--ckpt={full / "ckpt.pt"}', f'--out_dir={ev}', '--device=cpu', '--embedder=exact'])
    assert '| Random | P |' in out
    m = json.loads((ev / 'metrics.json').read_text())
    keys = ['A_mAP', 'C_mAP', 'B_doa_acc', 'D_doa_acc', 'B_der', 'D_der', 'E_direction_ba', 'E_distance_ba', 'E_avg']
    for k in keys:
        assert k in m and k in m['random'] and m[k] is not None
    preds = [json.loads(line) for line in (ev / 'predictions.jsonl').read_text().splitlines()]
    assert len(preds) == 28 and set(preds[0]) == {'id', 'type', 'question', 'reference', 'prediction'}
    # sample.py on an eval item (its clip and IR) answers what eval.py answered for it
    recs = {r['question_id']: r for r in map(json.loads, (qa / 'eval.jsonl').read_text().splitlines())}
    p = next(p for p in preds if p['type'] == 'DOA')
    r = recs[p['id']]
    out = run([PY, 'sample.py', f'--ckpt={full / "ckpt.pt"}', f'--clip={qa.parent / "sources" / r["audio_id"]}',
               f'--rir={qa.parent / "rirs" / "binaural" / r["reverb_id"]}', f'--question={r["question"]}',
               '--device=cpu'])
    assert out.strip().splitlines()[-1] == f"answer: {p['prediction']}"
    # sample.py on a binaural wav made from a clip and an IR
    import soundfile as sf
    wav = tmp_path / 'x.wav'
    sf.write(wav, np.random.default_rng(0).standard_normal((8000, 2)).astype(np.float32) * 0.1, 16000)
    out = run([PY, 'sample.py', f'--ckpt={full / "ckpt.pt"}', f'--wav={wav}', '--question=Where is the sound?',
               '--device=cpu'])
    assert 'resampled' in out and 'answer:' in out
    sf.write(tmp_path / 'mono.wav', np.zeros(8000, np.float32), SR)
    p = hooks.run_here('sample.py', f'--ckpt={full / "ckpt.pt"}', f'--wav={tmp_path / "mono.wav"}',
                       '--question=Where?', '--device=cpu')
    assert p.returncode != 0 and 'mono' in (p.stdout + p.stderr)


def test_sample_hears_a_rendered_left_source_on_the_left(tiny, tmp_path):
    """sample.py's direction path, where it is decidable without a trained model: for a noise source rendered 90
    degrees to the left (KEMAR), both of sample.py's inputs (a binaural WAV; a dry clip + IR) give exactly the
    waveform the training pipeline (features.qa_waveforms) makes of that item, so the same encoder tokens; and that
    waveform is 'left': the left ear louder in every feature frame's log-mel and earlier by KEMAR's lateral ITD.
    (sample.py's answer "left" from a trained chain: tests/test_sample.py.)"""
    import soundfile as sf
    import bat
    import features
    import render
    import sample
    import spatial_ast
    _, enc = tiny
    noise = np.random.default_rng(3).standard_normal(int(SR * CLIP)).astype(np.float32) * 0.1
    sf.write(tmp_path / 'noise.wav', noise, SR)
    lis = np.array([4.0, 1.6, 4.0])
    np.save(tmp_path / 'left.npy', render.binaural_rir([8.0, 4.0, 8.0], 0.5, lis, lis + [-2.0, 0.0, 0.0], max_order=2,
                                                       tail=False, ir_seconds=0.2))
    train = features.qa_waveforms([{'audio_id': 'noise.wav', 'reverb_id': 'left.npy'}], str(tmp_path), str(tmp_path),
                                  features.AudioCache(), 'cpu', clip_seconds=CLIP)  # (1, 2, N)
    placed = sample.place_clip(str(tmp_path / 'noise.wav'), str(tmp_path / 'left.npy'), CLIP, 'cpu')
    assert torch.allclose(placed, train, atol=1e-6)
    sf.write(tmp_path / 'binaural.wav', train[0].numpy().T, SR, subtype='FLOAT')  # (N, 2): left, right
    read = torch.from_numpy(sample.read_binaural(str(tmp_path / 'binaural.wav'), CLIP, log=lambda *a: None))[None]
    gain = read.norm() / train.norm()  # a recording is level-normalised with one gain for both ears
    assert torch.allclose(read / gain, train, atol=1e-6)
    left, right = read[0].double().numpy()
    lag = int(np.argmax(np.correlate(right, left, 'full'))) - (len(left) - 1)  # > 0: the right ear hears it later
    assert 0.5e-3 <= lag / SR <= 0.9e-3
    feats = features.binaural_features(read)  # (1, 4, T, 128): log-mel L, log-mel R, IPD cos, sin
    assert (feats[0, 0] - feats[0, 1]).mean(-1).min() > 0.5  # every frame: left louder (natural-log mel power)
    encoder, _ = spatial_ast.load_checkpoint(enc, 'cpu')
    encoder.eval()
    assert torch.allclose(bat.encode_waveforms(encoder, read / gain), bat.encode_waveforms(encoder, train), atol=1e-5)


def test_torchrun_two_processes(tiny, tmp_path):
    """2 CPU processes (gloo) through the curriculum; each trains on its own share of the items: the question ids
    they loaded (recorded by tests/script_hooks.py; cache_tokens=False loads every batch) are disjoint, and the
    stage-I items (A, B) are all seen, half by each."""
    qa, enc = tiny
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    seen = tmp_path / 'seen'
    out = run([PY, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'tests/script_hooks.py',
               str(seen), 'train_bat.py', f'--qa_dir={qa}', f'--encoder_ckpt={enc}', '--stage_iters=[6,1,1]',
               f'--out_dir={tmp_path}', '--cache_tokens=False'] + TINY + ['--eval_iters=0'], env=env)
    assert 'stage 3 iter 1/1' in out
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['stage'] == 3
    records = [json.loads(line) for line in (qa / 'train.jsonl').read_text().splitlines()]
    ids = [set(hooks.read(seen, rank, 'question')[0]) for rank in (0, 1)]
    assert ids[0] and ids[1] and not ids[0] & ids[1], ids
    stage1 = {r['question_id'] for r in records if r['question_type'] in ('CLASSIFICATION', 'DOA')}
    assert {i for i in ids[0] | ids[1] if i in stage1} == stage1


def test_gradient_accumulation_equals_one_larger_batch(tiny, tmp_path):
    """2 micro-batches of 2 give the gradient of one batch of 4 (to round-off), with answers of different lengths: the
    loss is a mean over answer tokens, so each micro-batch must count by its share of the step's tokens."""
    qa, enc = tiny
    seen = {}
    for b, k in ((2, 2), (4, 1)):
        out = tmp_path / f'{b}x{k}'
        hooks.run_script(out / 'seen', 'train_bat.py', [f'--qa_dir={qa}', f'--encoder_ckpt={enc}', '--stages=1',
                         '--stage_iters=[1]', f'--out_dir={out}'] + TINY + [
                         f'--batch_size={b}', f'--gradient_accumulation_steps={k}', '--qformer_dropout=0.0',
                         '--grad_clip=0.0', '--eval_iters=0'])
        seen[b, k] = hooks.read(out / 'seen')
    (_, micro, g_acc), (_, big, g_big) = seen[2, 2], seen[4, 1]
    rows = [p[2] for b in micro for p in b['parts']]  # answer tokens of each micro-batch
    assert len(rows) == 2 and rows[0] != rows[1] and sum(rows) == big[0]['parts'][0][2]
    assert len(g_acc) == len(g_big) and all((a is None) == (b is None) for a, b in zip(g_acc, g_big))
    assert hooks.grad_difference(g_acc, g_big) <= 1e-5
    assert max(b.abs().max().item() for b in g_big if b is not None) > 1e-3


def test_uncached_trainable_encoder_one_stage(tiny, tmp_path):
    """cache_tokens=False: convolution + features + encoder every step; freeze_encoder=False: its weights train and
    go into the checkpoint; stages=1 is the one-stage run on stage III."""
    qa, enc = tiny
    out = run([PY, 'train_bat.py', f'--qa_dir={qa}', f'--encoder_ckpt={enc}', '--stages=1', '--stage_iters=[2]',
               '--cache_tokens=False', '--freeze_encoder=False', f'--out_dir={tmp_path}'] + TINY)
    assert '=== stage 1/1' in out and 'MIXUP_DIRECTION' in out
    ck = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    base = torch.load(enc, weights_only=True)['model']
    trained = {k[len('encoder.'):]: v for k, v in ck['model'].items() if k.startswith('encoder.')}
    assert trained and any(not torch.equal(v, base[k]) for k, v in trained.items())
    import bat
    model, encoder, tok, _ = bat.load_bat(str(tmp_path / 'ckpt.pt'))
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in trained.items())


def make_tiny_llama(qa, root):
    """A random LLaMA-2-layout checkpoint written by transformers itself, with a tokenizer trained on the QA text."""
    import transformers
    import llama
    from train_bat import tokenizer_texts
    recs = [json.loads(line) for line in (qa / 'train.jsonl').read_text().splitlines()]
    n = llama.Tokenizer(llama.train_tokenizer(tokenizer_texts(recs) * 5, root / 'tokenizer', 200)).n_words
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, vocab_size=n, max_position_embeddings=512, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root)
    return root


def test_torchrun_fsdp_lora_matches_ddp_and_resumes(tiny, tmp_path):
    """A pretrained LLM (frozen, LoRA) sharded with FSDP over 2 CPU processes trains the same weights as DDP, keeps
    only the trained weights in the checkpoint, and resumes exactly."""
    qa, enc = tiny
    lm = make_tiny_llama(qa, tmp_path / 'llm')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    base = [PY, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train_bat.py', f'--qa_dir={qa}',
            f'--encoder_ckpt={enc}', f'--llm={lm}', '--stage_iters=[2,2,2]'] + TINY
    ck = {}
    for name, extra in (('ddp', []), ('fsdp', ['--fsdp=True'])):
        out = run(base + [f'--out_dir={tmp_path / name}'] + extra, env=env)
        assert 'stage 3 iter 2/2' in out
        ck[name] = torch.load(tmp_path / name / 'ckpt.pt', weights_only=True)['model']
    assert set(ck['fsdp']) == set(ck['ddp'])
    assert all(k.startswith('projector.') or 'lora_' in k for k in ck['fsdp'])  # no frozen base weight saved
    lora_b = [k for k in ck['fsdp'] if k.endswith('lora_b')]
    assert lora_b and all(ck['fsdp'][k].abs().max() > 2e-3 for k in lora_b)  # B starts at zero: it trained
    for k, v in ck['ddp'].items():  # reduce-scatter vs all-reduce order: ~5e-6 apart, 20x below the steps taken
        assert torch.allclose(v, ck['fsdp'][k], atol=1e-4), k
    # stopped in stage 2 and resumed under FSDP: the same weights as the uninterrupted FSDP run
    run(base + [f'--out_dir={tmp_path / "parts"}', '--fsdp=True', '--stop_after=3'], env=env)
    out = run(base + [f'--out_dir={tmp_path / "parts"}', '--fsdp=True', '--init_from=resume'], env=env)
    assert 'resumed' in out
    parts = torch.load(tmp_path / 'parts' / 'ckpt.pt', weights_only=True)['model']
    for k, v in ck['fsdp'].items():
        assert torch.allclose(v, parts[k], atol=1e-6), k


def test_compile_switch(tiny, tmp_path):
    """compile=True trains and saves the same keys as eager. torch.compile runs with the aot_eager backend (through
    tests/script_hooks.py): dynamo's graph capture and AOT autograd of our model, without inductor's minutes of C++
    code generation on a cold cache (`--compile=True` with the default backend: bench, or a GPU run)."""
    qa, enc = tiny
    base = [PY, 'tests/script_hooks.py', str(tmp_path / 'hooks'), 'train_bat.py', f'--qa_dir={qa}',
            f'--encoder_ckpt={enc}', '--stages=1', '--stage_iters=[1]'] + TINY
    keys = {}
    for flag in ('False', 'True'):
        out = run(base + [f'--out_dir={tmp_path / flag}', f'--compile={flag}'],
                  env={**os.environ, 'HOOKS_COMPILE_BACKEND': 'aot_eager'})
        assert 'stage 1 iter 1/1' in out
        keys[flag] = set(torch.load(tmp_path / flag / 'ckpt.pt', weights_only=True)['model'])
    assert keys['True'] == keys['False'] and not any('_orig_mod' in k for k in keys['True'])
