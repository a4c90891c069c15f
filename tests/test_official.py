"""
The official release drops in unchanged. Every official file is written here by the test itself, at small sizes, with
the official names and shapes (or by transformers / peft themselves): Spatial-AST's finetuned.pth, the SLAM-LLM BAT
model.pt (Blip2QFormerModel + peft LoRA), a Llama-2-layout HF dir, SpatialSoundQA {"data": [...]} files, mp3d_reverb
float64 IRs, Spatial-AST's AudioSet list-form metadata with its class CSV and weights CSV.
Run: python -m pytest -q tests/test_official.py   (CPU, no downloads)
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bat
import script_hooks as hooks
import llama
import spatial_ast

ROOT = Path(__file__).resolve().parents[1]
SR = 32000


pytestmark = [pytest.mark.usefixtures('one_thread'), pytest.mark.xdist_group('official')]  # conftest.py; test.sh


def randomise(module, seed=0):
    """Random values everywhere (norm weights around 1), so a wrong name or a skipped piece cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if 'norm' in name.lower() and name.endswith('weight'):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))

# -----------------------------------------------------------------------------
# official files, written the way the release writes them

def torchlibrosa_front_end():
    """The frozen tensors the official model saves (torchlibrosa STFT kernels, librosa's mel matrix), float32."""
    librosa = pytest.importorskip('librosa')
    n = 1024
    window = librosa.filters.get_window('hann', n, fftbins=True)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)[:, :n // 2 + 1] * window[:, None]
    return {'spectrogram_extractor.conv_real.weight': torch.tensor(np.real(dft).T[:, None, :], dtype=torch.float32),
            'spectrogram_extractor.conv_imag.weight': torch.tensor(np.imag(dft).T[:, None, :], dtype=torch.float32),
            'logmel_extractor.melW': torch.tensor(librosa.filters.mel(sr=SR, n_fft=n, n_mels=128, fmin=50, fmax=14000).T,
                                                  dtype=torch.float32)}


SMALL_ENC = dict(n_frames=64, patch=16, dim=64, depth=1, n_heads=1, n_classes=5, drop_path=0.0)


def write_finetuned(path, seed=0, **front):
    """A finetuned.pth as main_finetune.py saves it: {'model', 'optimizer', 'epoch', 'scaler', 'args' (Namespace)},
    official key names, small random tensors, the front-end tensors included."""
    torch.manual_seed(seed)
    model = spatial_ast.SpatialAST(spatial_ast.ModelArgs(**SMALL_ENC))
    randomise(model, seed)
    sd = {**model.state_dict(), **torchlibrosa_front_end(), **front}
    args = argparse.Namespace(nb_classes=SMALL_ENC['n_classes'], blr=1e-3, mask_2d=True)
    torch.save({'model': sd, 'optimizer': {}, 'epoch': 99, 'scaler': {}, 'args': args}, path)
    return model


def small_blip2(n_layers=3, hidden=32, heads=4, ffn=48, encoder_hidden=24, seed=0):
    transformers = pytest.importorskip('transformers')
    cfg = transformers.Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=heads,
                                          intermediate_size=ffn, encoder_hidden_size=encoder_hidden)
    torch.manual_seed(seed)
    model = transformers.Blip2QFormerModel(cfg).eval()
    randomise(model, seed)
    return model


def slam_projector_sd(qformer, n_query, llm_dim, seed=0):
    """encoder_projector.* as SLAM-LLM's EncoderProjectorQFormer saves them, and the module to check against."""
    g = torch.Generator().manual_seed(seed)
    hidden = qformer.config.hidden_size
    query = torch.randn(1, n_query, hidden, generator=g)
    linear, norm = torch.nn.Linear(hidden, llm_dim), torch.nn.LayerNorm(llm_dim, eps=1e-5)
    randomise(linear, seed + 1), randomise(norm, seed + 2)
    sd = {'encoder_projector.query': query}
    sd.update({f'encoder_projector.qformer.{k}': v for k, v in qformer.state_dict().items()})
    sd.update({f'encoder_projector.linear.{k}': v for k, v in linear.state_dict().items()})
    sd.update({f'encoder_projector.norm.{k}': v for k, v in norm.state_dict().items()})

    def reference(x):
        out = qformer(query_embeds=query.expand(x.shape[0], -1, -1), encoder_hidden_states=x, return_dict=True)
        return norm(linear(out.last_hidden_state))
    return sd, reference

# -----------------------------------------------------------------------------
# Q-Former and LoRA parity

def test_qformer_equals_blip2qformermodel():
    """Our Q-Former with a Blip2QFormerModel's weights (loaded under their own names) gives its outputs: the
    encoder tokens go in as they are (no norm), cross-attention every 2nd layer, BERT post-norm layers."""
    qformer = small_blip2()
    sd, reference = slam_projector_sd(qformer, n_query=5, llm_dim=40)
    state = bat.slam_projector_state(sd)
    args = bat.slam_qformer_args(state, n_heads=4)
    assert (args.n_layers, args.n_query, args.dim, args.ffn_dim, args.encoder_dim, args.llm_dim, args.cross_every) \
        == (3, 5, 32, 48, 24, 40, 2)
    ours = bat.QFormer(args).eval()
    ours.load_state_dict(state, strict=True)
    x = 3.0 * torch.randn(2, 17, 24, generator=torch.Generator().manual_seed(5))  # un-normalised, as Spatial-AST's
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5, diff
    assert not any('audio_norm' in k for k in ours.state_dict())


def test_slam_projector_rejects_unknown_keys():
    sd, _ = slam_projector_sd(small_blip2(n_layers=2), n_query=2, llm_dim=8)
    sd['encoder_projector.qformer.encoder.layer.0.mystery.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match='mystery'):
        bat.slam_projector_state(sd)


def tiny_hf_llama(path, vocab_size, seed=0, n_kv_heads=4):
    """A random Llama-2-layout HF dir written by transformers (save_pretrained); returns the HF model."""
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=n_kv_heads, vocab_size=vocab_size, max_position_embeddings=512,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
                                   bos_token_id=1, eos_token_id=2)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(path)
    return hf


def peft_lora(hf, rank=4, alpha=32, targets=('q_proj', 'v_proj'), seed=0):
    """The released recipe's LoRA made by peft on hf, with random A and B (B starts at zero in peft: a zero update
    would hide a wrong mapping). Returns (peft model, its LoRA tensors as SLAM saves them: 'llm.' + peft names)."""
    peft = pytest.importorskip('peft')
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.05, bias='none',
                          task_type='CAUSAL_LM')
    model = peft.get_peft_model(hf, cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_' in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    lora = {f'llm.{k}': v.clone() for k, v in model.state_dict().items() if 'lora_' in k}
    return model, lora


@pytest.mark.parametrize('targets', [('q_proj', 'v_proj'), ('q_proj', 'k_proj', 'v_proj', 'o_proj')])
def test_peft_lora_parity(tmp_path, targets):
    """A peft LoRA on a HF LLaMA, loaded onto llama.py's LoRA: the same logits (q/k B rows un-permuted)."""
    hf = tiny_hf_llama(tmp_path, vocab_size=80, n_kv_heads=2 if 'k_proj' in targets else 4)
    model, lora = peft_lora(hf, targets=targets)
    assert all(k.startswith('llm.base_model.model.model.layers.') for k in lora)
    ours = llama.load(tmp_path)
    rank, names = llama.peft_lora_shape(lora)
    assert rank == 4 and set(names) == {llama.HF_LAYER[f'self_attn.{t}'].split('.')[-1] for t in targets}
    llama.apply_lora(ours, rank=rank, alpha=32, targets=names)
    llama.load_peft_lora(ours, lora)
    ours.eval()
    x = torch.randint(3, 80, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=x).logits
        diff = (ours(x) - ref).abs().max().item()
    assert diff <= 1e-4, diff
    with torch.no_grad(), model.disable_adapter():
        assert (model(input_ids=x).logits - ref).abs().max() > 1e-2  # the LoRA changes the logits: the test can fail

# -----------------------------------------------------------------------------
# finetuned.pth

def test_finetuned_pth_loads_with_sizes_from_shapes(tmp_path):
    ref = write_finetuned(tmp_path / 'finetuned.pth')
    classes = [f'class {i}' for i in range(SMALL_ENC['n_classes'])]
    model, ck = spatial_ast.load_checkpoint(str(tmp_path / 'finetuned.pth'), classes=classes)
    a = model.args
    assert (a.dim, a.depth, a.n_heads, a.n_frames, a.patch, a.n_classes) == (64, 1, 1, 64, 16, 5)
    assert ck['classes'] == classes and ck['official']
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match='class list'):
        spatial_ast.load_checkpoint(str(tmp_path / 'finetuned.pth'), classes=classes[:3])


def test_finetuned_pth_front_end_is_checked(tmp_path):
    """The frozen STFT / mel tensors of the file are compared with features.py's: another mel matrix is refused."""
    mel = torchlibrosa_front_end()['logmel_extractor.melW']
    write_finetuned(tmp_path / 'bad.pth', **{'logmel_extractor.melW': mel.roll(1, dims=1)})
    with pytest.raises(ValueError, match='logmel_extractor.melW'):
        spatial_ast.load_checkpoint(str(tmp_path / 'bad.pth'))

# -----------------------------------------------------------------------------
# a small copy of the release's layout: AudioSet (list-form metadata, class CSV, weights CSV), mp3d_reverb,
# SpatialSoundQA closed-end files, SpatialAST/finetuned.pth, BAT/model.pt, and a Llama-2-layout HF dir

# class_labels_indices_subset.csv: index, mid, display_name; deliberately not in alphabetical order
CLASS_ROWS = [('/m/09x0r', 'Speech'), ('/m/0bt9lr', 'Dog'), ('/m/04rlf', 'Music'), ('/m/05tny_', 'Bark'),
              ('/m/01x3z', 'Clock')]
PROMPTS = ['Identify the sound events in the audio clip.', 'Where is the sound coming from?',
           'Is the sound of the dog to the left of the music?']


def write_wav(path, seconds, sr, channels=1, freq=440.0):
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    x = 0.2 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, subtype='PCM_16')


def released_ir(peak_left, peak_right, length, seed):
    """float64 (2, L) like the released IRs: direct sound at sample 31, a decaying tail."""
    rng = np.random.default_rng(seed)
    h = 0.01 * rng.standard_normal((2, length)) * np.exp(-np.arange(length) / 3000.0)
    h[0, 31], h[1, 31] = peak_left, peak_right
    return h


def write_release(root):
    import transformers
    A = root / 'SpatialSoundQA' / 'AudioSet'
    meta = A / 'metadata'
    (meta / 'weights').mkdir(parents=True)
    (meta / 'class_labels_indices_subset.csv').write_text(
        'index,mid,display_name\n' + ''.join(f'{i},{m},"{n}"\n' for i, (m, n) in enumerate(CLASS_ROWS)))
    train = [{'folder': 'balanced_train/audio', 'id': f'Ytrain{k}', 'label': [CLASS_ROWS[k % 5][0]] +
              (['/m/0notsubset'] if k == 0 else [])} for k in range(6)]
    evals = [{'folder': 'eval/audio', 'id': f'Yeval{k}', 'label': [CLASS_ROWS[(k + 1) % 5][0]]} for k in range(3)]
    for recs in (train, evals):
        for k, r in enumerate(recs):  # 16 kHz mono and 32 kHz stereo files: resampled / channel 0, as official
            write_wav(A / r['folder'] / f"{r['id']}.wav", 1.5, 16000 if k % 2 else SR, 1 if k % 2 else 2, 300 + 70 * k)
    (meta / 'balanced.json').write_text(json.dumps(train))
    (meta / 'eval.json').write_text(json.dumps(evals))
    weights = [1000.0 / (1 + k) for k in range(6)]
    weights[4] = 0.0  # a clip the sampler must never draw
    np.savetxt(meta / 'weights' / 'balanced_weight.csv', np.array(weights), delimiter=',')
    R = root / 'SpatialSoundQA' / 'mp3d_reverb'
    for split, scene in (('train', '17DRP5sb8fy'), ('eval', 'q9vSo1VnCiC')):
        (R / 'binaural' / scene).mkdir(parents=True)
        recs = []
        for k, (length, pl, pr) in enumerate([(41983, 1.23, 0.15), (37887, 0.09, 0.68), (40001, 0.5, 0.5)]):
            np.save(R / 'binaural' / scene / f'{k}.npy', released_ir(pl, pr, length, k))
            recs.append({'fname': f'{scene}/{k}.npy', 'sensor_position': '0.0,1.5,0.0', 'agent_position': '0.0,0.0,0.0',
                         'source_position': ['-1.0,1.5,-1.0', '2.0,1.0,1.0', '0.0,2.5,-3.0'][k]})
        (R / f'{split}_reverberation.json').write_text(json.dumps({'data': recs}))
    Q = root / 'SpatialSoundQA' / 'closed-end' / 'stage3-mixup'
    Q.mkdir(parents=True)
    one = lambda k: {'audio_id': f'eval/audio/Yeval{k}', 'reverb_id': f'q9vSo1VnCiC/{k}.npy', 'audio_id2': None,
                     'reverb_id2': None}
    items = [{**one(0), 'question_id': 0, 'question_type': 'CLASSIFICATION', 'question': PROMPTS[0], 'answer': 'Dog'},
             {**one(1), 'question_id': 1, 'question_type': 'DOA', 'question': PROMPTS[1],
              'answer': 'left, front, below; 1.5m'},
             {**one(2), 'audio_id2': 'eval/audio/Yeval0', 'reverb_id2': 'q9vSo1VnCiC/0.npy', 'question_id': 2,
              'question_type': 'MIXUP_DIRECTION', 'question': PROMPTS[2], 'answer': 'Yes'}]
    (Q / 'eval-stage3-direction.json').write_text(json.dumps({'data': items}))
    (Q / 'train.json').write_text(json.dumps({'data': items * 2}))
    (root / 'SpatialAST').mkdir()
    write_finetuned(root / 'SpatialAST' / 'finetuned.pth')
    # Llama-2-layout HF dir: a tiny LlamaForCausalLM + a SentencePiece tokenizer (LLaMA's ids: unk 0, bos 1, eos 2)
    hf_dir = root / 'Llama-2-7b-hf'
    texts = [bat.format_prompt(r['question']) + r['answer'] for r in items] * 10 + [r['answer'] for r in items]
    tok = llama.Tokenizer(llama.train_tokenizer(texts, root / 'tok' / 'tokenizer', 160))
    hf = tiny_hf_llama(hf_dir, tok.n_words)
    (hf_dir / 'tokenizer.model').write_bytes(Path(tok.model_path).read_bytes())
    (hf_dir / 'tokenizer_config.json').write_text(json.dumps({
        'tokenizer_class': 'LlamaTokenizer', 'add_bos_token': True, 'add_eos_token': False, 'bos_token': '<s>',
        'eos_token': '</s>', 'unk_token': '<unk>', 'legacy': False}))
    # BAT/model.pt: the trainable parameters of SLAM's model (Q-Former projector + peft LoRA), flat
    qformer = small_blip2(n_layers=2, hidden=128, heads=2, ffn=96, encoder_hidden=SMALL_ENC['dim'], seed=3)
    proj, _ = slam_projector_sd(qformer, n_query=4, llm_dim=64, seed=3)
    _, lora = peft_lora(hf, rank=4)
    (root / 'BAT').mkdir()
    torch.save({**proj, **lora}, root / 'BAT' / 'model.pt')
    return root


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    pytest.importorskip('transformers')
    pytest.importorskip('peft')
    return write_release(tmp_path_factory.mktemp('SpatialAudio'))


def run(args):
    return hooks.run_ok(*args)  # in this process (tests/script_hooks.py)


def test_eval_released_bat_on_official_files(release, tmp_path):
    """The issue's command: eval.py with the SLAM model.pt, finetuned.pth and a HF LLaMA dir on an official
    {"data": [...]} file (audio_id without .wav, reverb_id under mp3d_reverb/binaural, float64 IRs of 1.2-1.3 s)."""
    r = release / 'SpatialSoundQA'
    out = run(['eval.py', f"--ckpt={release / 'BAT' / 'model.pt'}",
               f"--encoder_ckpt={release / 'SpatialAST' / 'finetuned.pth'}", f"--llm={release / 'Llama-2-7b-hf'}",
               f"--eval_file={r / 'closed-end' / 'stage3-mixup' / 'eval-stage3-direction.json'}",
               f"--audio_root={r / 'AudioSet'}", f"--reverb_root={r / 'mp3d_reverb' / 'binaural'}", '--device=cpu',
               '--beams=1', '--max_new_tokens=6', f'--out_dir={tmp_path}', '--embedder=exact', '--plots=False'])
    assert 'greedy, up to 6 new tokens' in out
    preds = [json.loads(line) for line in (tmp_path / 'predictions.jsonl').read_text().splitlines()]
    assert [p['type'] for p in preds] == ['CLASSIFICATION', 'DOA', 'MIXUP_DIRECTION']
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert {'A_mAP', 'B_doa_acc', 'E_direction_ba'} <= set(metrics) and metrics['decoding'] == 'greedy'


def test_released_bat_loads_as_written(release):
    """load_bat on model.pt: the projector is the Blip2QFormerModel + Linear + LayerNorm written into it (2 heads read
    off its 128 width), and the LLM carries peft's LoRA (logits differ from the bare HF dir)."""
    model, encoder, tok, ck = bat.load_bat(str(release / 'BAT' / 'model.pt'), 'cpu',
                                           str(release / 'SpatialAST' / 'finetuned.pth'), str(release / 'Llama-2-7b-hf'))
    assert ck['slam'] and ck['config']['clip_pad'] == 'zero' and ck['base']['llm'] != 'scratch'
    qformer = small_blip2(n_layers=2, hidden=128, heads=2, ffn=96, encoder_hidden=SMALL_ENC['dim'], seed=3)
    _, reference = slam_projector_sd(qformer, n_query=4, llm_dim=64, seed=3)
    x = torch.randn(1, 3 + 32, SMALL_ENC['dim'], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model.projector(x) - reference(x)).abs().max() <= 1e-5
        ids = torch.tensor([tok.encode('Where is the dog?')])
        bare = llama.load(release / 'Llama-2-7b-hf')
        assert (model.llm(ids) - bare(ids)).abs().max() > 1e-3
    with pytest.raises(SystemExit, match='encoder_ckpt'):
        bat.load_bat(str(release / 'BAT' / 'model.pt'))


def test_official_waveforms_as_released(release):
    """float64 IRs of different lengths, 16 kHz / stereo clips shorter than 10 s: the waveform equals the released
    loader's recipe (channel 0, resample to 32 kHz, -14 dBFS, full convolution, zeros to 10 s, two sources averaged)."""
    import soundfile as sf
    from scipy.signal import fftconvolve, resample_poly
    import features
    A, B = release / 'SpatialSoundQA' / 'AudioSet', release / 'SpatialSoundQA' / 'mp3d_reverb' / 'binaural'
    rec = {'audio_id': 'eval/audio/Yeval1', 'reverb_id': 'q9vSo1VnCiC/1.npy', 'audio_id2': 'eval/audio/Yeval0',
           'reverb_id2': 'q9vSo1VnCiC/0.npy'}
    got = features.qa_waveforms([rec], str(A), str(B), features.AudioCache('zero'), 'cpu')[0].numpy()

    def one(audio_id, reverb_id):
        x, sr = sf.read(A / (audio_id + '.wav'))
        x = x[:, 0] if x.ndim > 1 else x
        x = resample_poly(x, SR, sr) if sr != SR else x
        x = x * 10 ** ((-14 - 20 * np.log10(np.sqrt(np.mean(x ** 2)))) / 20)
        h = np.load(B / reverb_id)
        assert h.dtype == np.float64 and 1.1 < h.shape[1] / SR < 1.35 and abs(int(np.abs(h[0]).argmax()) - 31) <= 1
        w = fftconvolve(x[None], h, mode='full')
        return np.pad(w, ((0, 0), (0, max(0, 10 * SR - w.shape[1]))))[:, :10 * SR]
    want = (one(rec['audio_id'], rec['reverb_id']) + one(rec['audio_id2'], rec['reverb_id2'])) / 2
    assert got.shape == (2, 10 * SR)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_tokenisation_as_released(release):
    """prompt + answer as one string (BOS first, EOS appended), the prompt's own length masked: the ids equal
    transformers' LLaMA tokenizer on the same text."""
    transformers = pytest.importorskip('transformers')
    pytest.importorskip('google.protobuf')
    from train_bat import joint_ids, tokenize
    hf_dir = release / 'Llama-2-7b-hf'
    tok, hf = llama.Tokenizer(hf_dir / 'tokenizer.model'), transformers.AutoTokenizer.from_pretrained(hf_dir)
    qa = release / 'SpatialSoundQA' / 'closed-end' / 'stage3-mixup' / 'eval-stage3-direction.json'
    recs = json.loads(qa.read_text())['data']
    prompts, answers = tokenize(recs, tok, 96, joint=True)
    separate = tokenize(recs, tok, 96, joint=False)
    for r, p, a in zip(recs, prompts, answers):
        prompt = bat.format_prompt(r['question'])
        full = hf(prompt + r['answer'])['input_ids'] + [hf.eos_token_id]
        assert full[0] == tok.bos_id and p + a == full
        assert len(p) == len(hf(prompt)['input_ids'])
    assert answers != separate[1]  # "Response:" + "Dog" is not "Response:" then "▁Dog": the way matters
    p, a = joint_ids('Q:', 'a b c d e f', tok, max_answer_tokens=3)
    assert len(a) == 3 and a[-1] == tok.eos_id


def test_sources_from_the_list_form_metadata(release, tmp_path):
    """sources.py on Spatial-AST's metadata: clip = audio_root/folder/id.wav, labels by mid through the class CSV
    (mids outside it left out), the CSV's row order kept in classes.txt (and by train_encoder), weights per clip."""
    meta = release / 'SpatialSoundQA' / 'AudioSet' / 'metadata'
    run(['sources.py', '--collection=audioset', f"--path={meta / 'balanced.json'},{meta / 'eval.json'}",
         f"--audio_root={release / 'SpatialSoundQA' / 'AudioSet'}",
         f"--class_list={meta / 'class_labels_indices_subset.csv'}",
         f"--weight_csv={meta / 'weights' / 'balanced_weight.csv'}", f'--out_dir={tmp_path}', '--clip_seconds=1.5'])
    rows = [json.loads(line) for line in (tmp_path / 'sources.jsonl').read_text().splitlines()]
    names = [n for _, n in CLASS_ROWS]
    assert (tmp_path / 'classes.txt').read_text().split('\n')[:-1] == names != sorted(names)
    train = [r for r in rows if r['split'] == 'train']
    assert [r['labels'] for r in train] == [[names[k % 5]] for k in range(6)]
    assert [r['weight'] for r in train] == pytest.approx([1000.0 / (1 + k) if k != 4 else 0.0 for k in range(6)])
    assert all(Path(tmp_path, r['path']).is_file() or Path(r['path']).is_file() for r in rows)
    assert sum(r['split'] == 'eval' for r in rows) == 3 and 'class order' in (tmp_path / 'summary.md').read_text()
    from train_encoder import EpochSampler, class_order
    assert class_order('', str(tmp_path / 'sources.jsonl'), train) == names
    sampler = EpochSampler('weighted', 6, 4, samples_per_iter=2, seed=0, weights=[r['weight'] for r in train])
    for epoch in range(5):
        picks = np.concatenate([sampler.picks(epoch * 2 + s, 0, 1, rank, 2, 1) for s in range(2) for rank in range(2)])
        assert len(set(picks.tolist())) == 4 and 4 not in picks  # without replacement, never a zero weight
    shuffle = EpochSampler('shuffle', 6, 0, samples_per_iter=3, seed=0)
    assert sorted(np.concatenate([shuffle.picks(s, 0, 1, 0, 1, 3) for s in (2, 3)]).tolist()) == list(range(6))


def test_finetuned_pth_feeds_train_encoder_and_train_bat(release, tmp_path):
    """--init_from=finetuned.pth (sizes from its shapes, head rows in the class CSV's order) trains on the official
    mp3d_reverb JSON; train_bat.py takes finetuned.pth as its encoder, a LLaMA-2-layout dir and the official
    train.json (tokenised as released), with the released linear schedule."""
    meta = release / 'SpatialSoundQA' / 'AudioSet' / 'metadata'
    src = tmp_path / 'src'
    run(['sources.py', '--collection=audioset', f"--path={meta / 'balanced.json'},{meta / 'eval.json'}",
         f"--class_list={meta / 'class_labels_indices_subset.csv'}", f'--out_dir={src}', '--clip_seconds=1.5'])
    out = run(['train_encoder.py', f"--sources={src / 'sources.jsonl'}",
               f"--render_dir={release / 'SpatialSoundQA' / 'mp3d_reverb'}",
               f"--init_from={release / 'SpatialAST' / 'finetuned.pth'}", '--device=cpu', '--clip_seconds=1.5',
               '--clip_pad=zero', '--roll_mag=True', '--sampler=shuffle', '--epochs=1', '--warmup_epochs=0',
               '--batch_size=3', '--eval_items=3', '--eval_batch_size=3', f"--out_dir={tmp_path / 'enc'}"])
    assert 'official Spatial-AST weights' in out and '1 epochs x 2 iterations' in out
    ck = torch.load(tmp_path / 'enc' / 'ckpt.pt', weights_only=True)
    assert ck['classes'] == [n for _, n in CLASS_ROWS] and ck['model_args']['dim'] == SMALL_ENC['dim']
    q = release / 'SpatialSoundQA' / 'closed-end' / 'stage3-mixup'
    out = run(['train_bat.py', f"--train_file={q / 'train.json'}", f"--eval_file={q / 'eval-stage3-direction.json'}",
               f"--audio_root={release / 'SpatialSoundQA' / 'AudioSet'}",
               f"--reverb_root={release / 'SpatialSoundQA' / 'mp3d_reverb' / 'binaural'}",
               f"--encoder_ckpt={release / 'SpatialAST' / 'finetuned.pth'}", f"--llm={release / 'Llama-2-7b-hf'}",
               '--stages=1', '--stage_iters=[2]', '--lr_schedule=linear', '--warmup_iters=1', '--grad_clip=0.0',
               '--clip_seconds=1.0', '--clip_pad=zero', '--qformer_layers=2', '--n_query=4', '--qformer_dim=32',
               '--qformer_heads=2', '--qformer_ffn=48', '--batch_size=2', '--eval_interval=2', '--eval_iters=1',
               '--log_interval=1', '--device=cpu', f"--out_dir={tmp_path / 'bat'}"])
    assert 'iter 2/2' in out
    ck = torch.load(tmp_path / 'bat' / 'ckpt.pt', weights_only=True)
    assert ck['config']['clip_pad'] == 'zero' and any('lora_' in k for k in ck['model'])


def test_linear_schedule_is_the_released_one():
    from common import get_lr
    lrs = [get_lr(it, 1e-4, 0.0, 20000, 200000, 'linear') for it in (0, 10000, 20000, 110000, 200000, 250000)]
    assert lrs == pytest.approx([0.0, 5e-5, 1e-4, 5e-5, 0.0, 0.0])


def test_sample_released_bat(release):
    """sample.py takes the same flags: model.pt + finetuned.pth + HF dir, a dry clip placed by a released IR."""
    r = release / 'SpatialSoundQA'
    out = run(['sample.py', f"--ckpt={release / 'BAT' / 'model.pt'}",
               f"--encoder_ckpt={release / 'SpatialAST' / 'finetuned.pth'}",
               f"--llm={release / 'Llama-2-7b-hf'}", f"--clip={r / 'AudioSet' / 'eval' / 'audio' / 'Yeval1.wav'}",
               f"--rir={r / 'mp3d_reverb' / 'binaural' / 'q9vSo1VnCiC' / '1.npy'}", '--question=Where is the sound?',
               '--beams=1', '--max_new_tokens=4', '--device=cpu'])
    assert 'question: Where is the sound?' in out and 'answer:' in out


def test_spec_augment_one_mask_per_batch_and_roll_mag_gain():
    """SpecAugment as the official torchaudio call (iid_masks=False): one frequency band and one time span for the
    whole batch, narrower than the widest; roll-mag: the clip times a gain in [0.5, 1.5] (its roll is by 0)."""
    from spatial_ast import spec_augment
    from train_encoder import ClipIRData
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        y = spec_augment(torch.ones(4, 1, 64, 32), freq_mask=12, time_mask=20, shared=True)
        assert all(torch.equal(y[0], y[b]) for b in range(4))
        cols, rows = (y[0, 0] == 0).all(0), (y[0, 0] == 0).all(1)
        assert cols.sum() < 12 and rows.sum() < 20
        seen.add((int(cols.sum()), int(rows.sum())))
    assert len(seen) > 5  # widths are drawn
    y = spec_augment(torch.ones(4, 1, 64, 32), freq_mask=12, time_mask=20, shared=False)
    assert any(not torch.equal(y[0], y[b]) for b in range(1, 4))

    class Cache:
        def clip(self, path, sr, seconds):
            return np.ones(8, np.float32)
    data = ClipIRData([{'path': 'x', 'labels': ['Dog']}], [{'fname': 'r/0.npy'}], ['Dog'], Cache(), SR, 1.0, 0.1,
                      roll_mag=True)
    rng = np.random.default_rng(0)
    gains = [data.clip(0, rng)[0] for _ in range(200)]
    assert 0.5 < min(gains) and max(gains) < 1.5 and np.std(gains) > 0.05
    clip = data.clip(0, rng)
    assert np.all(clip == clip[0])  # a gain, not a shift
    assert np.all(data.clip(0) == 1.0)  # evaluation: no augmentation
