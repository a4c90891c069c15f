"""
Train BAT: frozen Spatial-AST tokens -> projector (Q-Former) -> audio prefix -> LLaMA answering spatial questions,
through the 3-stage curriculum in one command (I: A+B, II: A-D, III: A-E, each starting from the last).
The LLM is either a tiny LLaMA trained from scratch with our own SentencePiece tokenizer (the embedded default,
llm='scratch') or a LLaMA-2 directory (frozen, LoRA r 8 / alpha 32 / dropout 0.05 on wq, wv, as the released recipe).
Because the encoder is frozen and every QA item has a fixed IR, the encoder's tokens are computed once per distinct
(clip, IR) pair and cached under <out_dir>/enc_cache (cache_tokens=False runs convolution + features + encoder
every step on the device instead). The checkpoint holds only what trained (projector, LoRA or the scratch LLM)
and names the base weights it belongs on. With a LLaMA-2, prompt + answer are tokenised as one string, as released.
--encoder_ckpt takes our train_encoder.py checkpoint or the official SpatialAST/finetuned.pth.

    python train_bat.py config/demo_bat.py                                  # CPU demo (~7 min on 2 cores)
    python train_bat.py config/paper_bat.py --device=cuda                   # the released recipe, one GPU
    python train_bat.py config/paper_bat.py config/paper_bat_curriculum.py --device=cuda   # our 3 stages
    torchrun --standalone --nproc_per_node=8 train_bat.py config/paper_bat.py   # DDP (add --fsdp=True to shard)
    python train_bat.py config/demo_bat.py --init_from=resume               # resume exactly where it stopped
    python train_bat.py config/demo_bat.py --overwrite=True                 # start over in a folder holding a run

Paths in the checkpoint (encoder, tokenizer, QA folder, audio and IR roots) are stored relative to out_dir: a run
folder moved together with its inputs still loads, and eval.py / sample.py take --encoder_ckpt= etc. otherwise.
"""
import atexit
import json
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch

from bat import BAT, QFormerArgs, collate, batch_to, encoder_tokens, format_prompt, make_projector, build_llm
from common import (KIND_NAMES, get_lr, read_records, require, atomic_write, stage_types, write_text, check_out_dir,
                    checkpoint_kind, duration, found_path, load_weights, remove_stale_temps, stored_path)
from features import check_audio_files

QA_FIELDS = ('audio_id', 'reverb_id', 'question_type', 'question', 'answer')


def read_qa(paths):
    """One QA file or several, comma-separated (our JSONL or the official {"data": [...]} JSON)."""
    records = []
    for path in paths.split(','):
        for i, r in enumerate(read_records(path)):
            require(r, QA_FIELDS, f'{path}:{i + 1}')
            records.append(r)
    return records


def subset_per_type(records, cap, seed):
    """At most `cap` items of each question_type (seeded choice, file order kept): on a CPU the encoder-token cache
    costs ~50 ms per distinct clip pair, so the demo trains on a subset."""
    if not cap:
        return records
    rng = np.random.default_rng(seed)
    by_type = {}
    for i, r in enumerate(records):
        by_type.setdefault(r['question_type'], []).append(i)
    keep = set()
    for idx in by_type.values():
        keep.update(rng.permutation(idx)[:cap].tolist())
    return [r for i, r in enumerate(records) if i in keep]


def tokenize(records, tok, max_answer_tokens, joint=False):
    """Per record: prompt ids (BOS + template) and answer ids (answer + EOS, cut to max_answer_tokens).
    joint=True is the released recipe's way: BOS + (template + answer) tokenised as one string, EOS appended, and the
    first len(BOS + template) ids are the prompt (whatever the merge at the boundary did), the rest the answer."""
    if joint:
        return tuple(zip(*(joint_ids(format_prompt(r['question']), r['answer'], tok, max_answer_tokens)
                           for r in records))) or ([], [])
    prompts = [tok.encode(format_prompt(r['question']), bos=True, eos=False) for r in records]
    return prompts, [answer_ids(r['answer'], tok, max_answer_tokens) for r in records]


def joint_ids(prompt, answer, tok, max_answer_tokens):
    """(prompt ids, answer ids) of one item, tokenised as the released recipe: encode(prompt + answer) + EOS, split
    at len(encode(prompt)) (the loss mask covers the prompt's own length)."""
    ids = tok.encode(prompt + str(answer), bos=True, eos=False) + [tok.eos_id]
    n = len(tok.encode(prompt, bos=True, eos=False))
    return ids[:n], ids[n:][:max_answer_tokens - 1] + ([tok.eos_id] if len(ids) - n > max_answer_tokens - 1 else [])


def answer_ids(answer, tok, max_answer_tokens):
    return tok.encode(str(answer), bos=False, eos=False)[:max_answer_tokens - 1] + [tok.eos_id]


def tokenizer_texts(records):
    """What the scratch tokenizer learns from: the template and every question and answer."""
    # the whole prompt per item, so the template's words become a few pieces (shorter sequences)
    return [format_prompt(r['question']) for r in records] + [str(r['answer']) for r in records]


def save_checkpoint(path, obj):
    atomic_write(path, lambda f: torch.save(obj, f), mode='wb')

# -----------------------------------------------------------------------------
# config
out_dir = 'out/bat'            # where ckpt.pt, tokenizer.model, enc_cache/, summary.md go
qa_dir = 'out/demo/qa'         # make_qa.py output: train.jsonl, eval.jsonl, meta.json
train_file = ''                # '' = <qa_dir>/train.jsonl; or an official SpatialSoundQA train.json
eval_file = ''                 # '' = <qa_dir>/eval.jsonl (eval loss only; eval.py scores)
max_items_per_type = 0         # 0 = all train items; else a seeded subset of at most this many per question_type
audio_root = ''                # '' = meta.json's audio_root; else the root audio_id is relative to
reverb_root = ''               # '' = meta.json's reverb_root; else the mp3d_reverb/binaural folder
encoder_ckpt = 'out/demo/encoder/ckpt.pt'  # train_encoder.py checkpoint
freeze_encoder = True          # True (paper) | False (only with cache_tokens=False)
cache_tokens = True            # True: encoder tokens once per (clip, IR), cached | False: encoder every step
clip_seconds = 10.0            # 10.0 paper; demo 2.0
clip_pad = 'loop'              # a clip shorter than clip_seconds: 'loop' | 'zero' (the released loader pads with zeros)
joint_tokens = False           # True: prompt + answer tokenised as one string, as the released recipe (train_bat.tokenize);
                               # a LLaMA-2 llm always does; the scratch tokenizer's demo uses separate pieces
encode_batch_size = 16         # clips per encoder batch when filling the cache
llm = 'scratch'                # 'scratch' (tiny LLaMA, trained fully) | path to a LLaMA-2 HF/Meta dir (frozen + LoRA)
tokenizer = ''                 # '' = train one (scratch) or <llm>/tokenizer.model
vocab_size = 1024              # scratch tokenizer vocabulary (soft limit)
llm_dim = 512                  # scratch LLaMA sizes
llm_layers = 8
llm_heads = 8
llm_dropout = 0.0
lora_rank = 8                  # pretrained LLM: LoRA settings (released recipe)
lora_alpha = 32
lora_dropout = 0.05
lora_targets = 'wq,wv'         # comma-separated linear names
projector = 'qformer'          # 'qformer' (released recipe) | 'linear' | 'mlp' (ablations: pooled tokens)
qformer_layers = 8             # released recipe sizes (QFormerArgs defaults)
n_query = 64
qformer_dim = 768
qformer_heads = 12
qformer_ffn = 3072
qformer_dropout = 0.1
stages = 3                     # 3 = curriculum I -> II -> III (paper) | 1 = one-stage on III
stage_iters = [20000, 20000, 40000]  # iterations per stage (the last one alone when stages=1)
batch_size = 8                 # per process, per micro-step
gradient_accumulation_steps = 1
max_answer_tokens = 96         # released max_words
learning_rate = 1e-4           # AdamW peak lr (released recipe); restarted (warmup + decay) per stage
lr_schedule = 'cosine'         # 'cosine' (warmup, cosine to min_lr) | 'linear' (released: warmup, straight line to 0)
lr_decay_iters = 0             # where the decay ends; 0 = the stage's length (released: 200000 whatever ends training)
min_lr = 0.0                   # floor of the cosine decay (released recipe: down to 0)
warmup_iters = 1000
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0                # 0 = off
eval_interval = 1000
eval_iters = 20                # batches per eval-loss estimate
log_interval = 50
always_save_checkpoint = True  # save at every eval (else only when eval loss improves); always at stage ends
init_from = 'scratch'          # 'scratch' | 'resume' (from <out_dir>/ckpt.pt)
overwrite = False              # True: a fresh run may replace the run already in out_dir (else that is refused)
stop_after = 0                 # stop (with a checkpoint) after this many iterations in this run; 0 = run to the end
device = 'auto'                # 'auto' | 'cpu' | 'cuda' | 'cuda:1' ...
dtype = 'auto'                 # 'auto' (bfloat16 on capable GPUs, else float32) | 'float32' | 'bfloat16' | 'float16'
compile = False                # torch.compile the model
fsdp = False                   # FSDP2: shard the LLM over the torchrun processes (per TransformerBlock; compute in dtype)
backend = 'auto'               # 'auto' (nccl on cuda, gloo on cpu) | 'nccl' | 'gloo'
seed = 1337
threads = 0                    # CPU threads (0 = torch default)
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    config = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, list, dict))}
    import torch.distributed as dist
    import llama
    import spatial_ast

    # derived values, DDP, device
    ddp = int(os.environ.get('RANK', -1)) != -1
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if ddp:
        dist.init_process_group(backend=('nccl' if 'cuda' in device else 'gloo') if backend == 'auto' else backend)
        rank, local_rank, world = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
        if 'cuda' in device:
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    master = rank == 0
    if threads:
        torch.set_num_threads(threads)
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    assert stages in (1, 3), f'stages must be 1 or 3, got {stages}'
    stage_iters = list(stage_iters)
    assert len(stage_iters) == 3 or (stages == 1 and len(stage_iters) >= 1), 'stage_iters: three ints (or one)'
    assert lr_schedule in ('cosine', 'linear'), f"lr_schedule must be 'cosine' or 'linear', got {lr_schedule!r}"
    assert clip_pad in ('loop', 'zero'), f"clip_pad must be 'loop' or 'zero', got {clip_pad!r}"
    stage_iters = stage_iters if stages == 3 else stage_iters[-1:]
    assert freeze_encoder or not cache_tokens, 'a trainable encoder needs cache_tokens=False'
    assert not fsdp or ddp, 'fsdp=True needs torchrun'
    # nothing is written into out_dir until every input has been read and checked (a failed run leaves it as it was)
    ckpt_path = check_out_dir(out_dir, init_from, overwrite, 'train_bat')
    ck = load_weights(ckpt_path, 'checkpoint to resume') if init_from == 'resume' else None
    if ck is not None and checkpoint_kind(ck) != 'bat':
        raise SystemExit(f"train_bat: {ckpt_path} is {KIND_NAMES[checkpoint_kind(ck)]}, not a train_bat.py checkpoint")
    train_file = train_file or os.path.join(qa_dir, 'train.jsonl')
    eval_file = eval_file or os.path.join(qa_dir, 'eval.jsonl')
    meta_path = os.path.join(qa_dir, 'meta.json')
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    audio_root = audio_root or found_path(meta.get('audio_root', ''), qa_dir)  # meta.json: relative to qa_dir
    reverb_root = reverb_root or found_path(meta.get('reverb_root', ''), qa_dir)
    if not (audio_root and reverb_root):
        raise SystemExit(f"train_bat: no audio_root/reverb_root: set --audio_root= and --reverb_root=, or give a "
                         f"--qa_dir= with meta.json (now {qa_dir})")
    log = print if master else (lambda *a, **k: None)
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if dtype == 'float32' or fsdp else torch.autocast(device_type, dtype=ptdtype)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    barrier = dist.barrier if ddp else (lambda: None)
    t_start = time.time()

    # data
    for path in (train_file, eval_file):
        if not os.path.isfile(path):
            raise SystemExit(f"train_bat: no QA file {path} (set --qa_dir=, or --train_file= / --eval_file=)")
    try:
        train_records, eval_records = read_qa(train_file), read_qa(eval_file)
    except (ValueError, KeyError) as e:  # read_records / require name the file and line
        raise SystemExit(f"train_bat: {e.args[0]}") from None
    if not train_records:
        raise SystemExit(f"train_bat: {train_file} holds no QA items")
    check_audio_files(train_records + eval_records, audio_root, reverb_root, 'train_bat')
    n_all = len(train_records)
    train_records = subset_per_type(train_records, max_items_per_type, seed)
    types = [set(stage_types(k)) for k in (1, 2, 3)][-stages:]  # stages=1: the one-stage run on stage III
    log(f"train {len(train_records)} (of {n_all}) / eval {len(eval_records)} QA items; stage types: "
        + ' | '.join(','.join(sorted(t)) for t in types))

    # tokenizer (trained here for the scratch LLM, on rank 0, in a temp folder: it goes into out_dir with the first
    # checkpoint, so a run that fails before then leaves the folder's own tokenizer alone)
    tok_path = tokenizer or (os.path.join(out_dir, 'tokenizer.model') if llm == 'scratch'
                             else os.path.join(llm, 'tokenizer.model'))
    new_tok = llm == 'scratch' and not tokenizer and not (init_from == 'resume' and os.path.exists(tok_path))
    tok_file = os.path.join(tempfile.mkdtemp(prefix='nanobat_tokenizer_'), 'tokenizer.model') if new_tok else tok_path
    if new_tok:  # the temp folder goes however the run ends (a failed check below, an error, Ctrl-C)
        atexit.register(shutil.rmtree, os.path.dirname(tok_file), True)
    if new_tok and master:
        llama.train_tokenizer(tokenizer_texts(train_records), tok_file[:-len('.model')], vocab_size)
    if new_tok and ddp:  # the other ranks (maybe on other machines) get rank 0's file
        blob = [open(tok_file, 'rb').read() if master else None]
        dist.broadcast_object_list(blob, src=0)
        if not master:
            with open(tok_file, 'wb') as f:
                f.write(blob[0])
    if not os.path.isfile(tok_file):
        raise SystemExit(f"train_bat: no tokenizer at {tok_file} (--tokenizer=, or tokenizer.model in --llm=)")
    tok = llama.Tokenizer(tok_file)
    joint = joint_tokens or llm != 'scratch'  # LLaMA-2 checkpoints: tokenised as released
    train_tok = tokenize(train_records, tok, max_answer_tokens, joint)
    eval_tok = tokenize(eval_records, tok, max_answer_tokens, joint)
    log(f"tokenizer {tok_path}: {tok.n_words} pieces; prompt ~{np.mean([len(p) for p in train_tok[0]]):.0f} "
        f"+ answer ~{np.mean([len(a) for a in train_tok[1]]):.1f} tokens")

    # encoder and its cached tokens (rank 0 fills the cache, the others then read it)
    encoder, enc_ckpt = spatial_ast.load_checkpoint(encoder_ckpt, device)
    encoder.requires_grad_(not freeze_encoder)
    cache_dir = os.path.join(out_dir, 'enc_cache')
    enc = {}
    if cache_tokens:
        for turn in ('master', 'others'):
            if (turn == 'master') == master:
                for name, recs in (('train', train_records), ('eval', eval_records)):
                    enc[name] = encoder_tokens(recs, encoder, encoder_ckpt, audio_root, reverb_root, cache_dir,
                                               device, clip_seconds, encode_batch_size, log=log, pad=clip_pad)
            barrier()
        encoder_dim = enc['train'][0].shape[-1]
        encoder = encoder.cpu()  # not needed any more on the device
    else:
        from features import AudioCache, qa_waveforms, binaural_features
        audio_cache = AudioCache(clip_pad)
        encoder_dim = encoder.args.dim
    log(f"encoder: {encoder_ckpt} dim {encoder_dim}" + (f", cached tokens {tuple(enc['train'][0].shape)}" if enc else ''))

    # model
    qargs = QFormerArgs(n_layers=qformer_layers, n_query=n_query, dim=qformer_dim, n_heads=qformer_heads,
                        ffn_dim=qformer_ffn, encoder_dim=encoder_dim, dropout=qformer_dropout, projector=projector)
    torch.manual_seed(seed)
    if llm == 'scratch':
        llm_args = {'dim': llm_dim, 'n_layers': llm_layers, 'n_heads': llm_heads, 'vocab_size': tok.n_words,
                    'max_seq_len': 512, 'dropout': llm_dropout}
        lm = build_llm(llm_args, 'cpu')
    else:
        # frozen base in the compute dtype; under FSDP fp32 storage (flat shards need one dtype; LoRA is fp32)
        lm = llama.load(llm, device='cpu', dtype=torch.float32 if fsdp else ptdtype)
        assert lm.args.vocab_size == tok.n_words, f'{tok_path}: {tok.n_words} pieces but the LLM has {lm.args.vocab_size}'
        llama.apply_lora(lm, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=tuple(lora_targets.split(',')))
        llm_args = asdict(lm.args)
    qargs.llm_dim = lm.args.dim
    model = BAT(make_projector(qargs), lm)
    if not freeze_encoder:
        model.encoder = encoder  # trains with the rest, and its weights go into the checkpoint
    if not fsdp:
        model.to(device)  # FSDP moves (and shards) it block by block itself
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    trainable_names |= {k for k in model.state_dict() if k.startswith('encoder.')}  # + its BatchNorm statistics
    log(f"model: projector {sum(p.numel() for p in model.projector.parameters()) / 1e6:.2f}M, "
        f"LLM {lm.num_params() / 1e6:.2f}M; trainable {n_train / 1e6:.2f}M")
    stage0, it0, best_val = 0, 0, float('inf')
    if init_from == 'resume':
        missing, unexpected = model.load_state_dict(ck['model'], strict=False)
        assert not unexpected, f'{ckpt_path}: unexpected keys {unexpected[:5]}'
        assert not set(missing) & trainable_names, f'{ckpt_path}: trained weights missing'
        stage0, it0, best_val = ck['stage'], ck['stage_iter'], ck['best_val_loss']
    raw = model
    if fsdp:
        # FSDP2: each LLaMA block is its own shard group (gathered just for its forward/backward), the rest with the
        # root; parameters stay fp32 in storage (a group needs one dtype; LoRA trains in fp32) and compute in `dtype`
        from torch.distributed.fsdp import fully_shard, MixedPrecisionPolicy
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh(device_type, (world,))
        mp = MixedPrecisionPolicy(param_dtype=ptdtype, reduce_dtype=torch.float32)
        for p in model.parameters():  # FSDP shards row-major tensors only (llama.py keeps a column-major CPU output)
            p.data = p.data.contiguous()
        for block in lm.layers:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
    elif ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)

    # optimizer (decay only matrices; built after sharding so FSDP's parameters are the ones it steps)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(beta1, beta2),
                                  fused=device_type == 'cuda' and not fsdp)
    # full (unsharded) state dicts keyed by parameter name, on CPU: the same checkpoint with or without FSDP
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_optimizer_state_dict)
    full_sd = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    if init_from == 'resume':
        set_optimizer_state_dict(raw, optimizer, ck['optimizer'], options=StateDictOptions(full_state_dict=True))
        log(f"resumed {ckpt_path}: stage {stage0 + 1}, iter {it0}")
        del ck
    if compile:
        model = torch.compile(model)

    def get_batch(split, idx):
        """Audio tokens (B, S, dim) + the collated text batch for records idx of split."""
        recs, (prompts, answers) = (train_records, train_tok) if split == 'train' else (eval_records, eval_tok)
        batch = batch_to(collate([prompts[i] for i in idx], [answers[i] for i in idx], n_query, tok.pad_id), device)
        if cache_tokens:
            tokens, index = enc[split]
            audio = tokens[index[torch.as_tensor(idx)]].to(device, torch.float32)
        else:
            wav = qa_waveforms([recs[i] for i in idx], audio_root, reverb_root, audio_cache, device,
                               clip_seconds=clip_seconds)
            with torch.set_grad_enabled(not freeze_encoder):  # the frozen encoder sits outside the model
                audio = (encoder if freeze_encoder else raw.encoder).tokens(binaural_features(wav))
        return audio, batch

    @torch.no_grad()
    def estimate_loss(pool):
        """Mean eval loss over eval_iters fixed batches of this stage's eval items."""
        model.eval()
        g = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(eval_iters if len(pool) else 0):
            idx = pool[torch.randint(len(pool), (batch_size,), generator=g)].tolist()
            audio, batch = get_batch('eval', idx)
            with ctx:
                losses.append(model(audio, batch).item())
        model.train()
        return float(np.mean(losses)) if losses else float('nan')

    def checkpoint(stage, stage_iter, val):
        # collective under FSDP (every rank sends its shards of the trained weights to rank 0, which writes)
        full = get_model_state_dict(raw, options=full_sd) if fsdp else raw.state_dict()
        opt_state = get_optimizer_state_dict(raw, optimizer, options=full_sd)
        state = {k: v.detach().cpu() for k, v in full.items() if k in trainable_names}
        if master:
            if new_tok:  # the new tokenizer goes in beside the checkpoint (a small file, rewritten each time)
                atomic_write(tok_path, lambda f: f.write(open(tok_file, 'rb').read()), mode='wb')
            save_checkpoint(ckpt_path, {
                'model': state, 'optimizer': opt_state, 'iter_num': sum(stage_iters[:stage]) + stage_iter,
                'stage': stage, 'stage_iter': stage_iter, 'best_val_loss': val, 'config': config,
                'model_args': {'projector': asdict(qargs), 'llm': llm_args},
                # paths relative to out_dir (common.stored_path): a run folder moved with its inputs still loads
                'base': {'encoder': stored_path(encoder_ckpt, out_dir),
                         'llm': llm if llm == 'scratch' else stored_path(llm, out_dir),
                         'tokenizer': stored_path(tok_path, out_dir)},
                'classes': meta.get('classes') or enc_ckpt.get('classes'), 'qa_dir': stored_path(qa_dir, out_dir),
                'audio_root': stored_path(audio_root, out_dir), 'reverb_root': stored_path(reverb_root, out_dir),
            })

    # every input is read: now out_dir may change
    if master:
        os.makedirs(out_dir, exist_ok=True)
        for folder in (out_dir, cache_dir):
            remove_stale_temps(folder, log)
        if init_from != 'resume' and os.path.exists(ckpt_path):  # overwrite=True (check_out_dir)
            os.remove(ckpt_path)
            log(f"overwrite=True: removed the previous run's {ckpt_path}")

    # training: the curriculum
    model.train()
    history, n_run, t_loop = [], 0, time.time()
    n_total = sum(stage_iters)  # iterations of the whole run (all stages)
    for stage in range(stage0, len(types)):
        if stop_after and n_run >= stop_after:
            break
        # this process's share of the items (every world-th one, as a DistributedSampler): DDP ranks see disjoint data
        pool = torch.tensor([i for i, r in enumerate(train_records) if r['question_type'] in types[stage] and
                             i % world == rank])
        eval_pool = torch.tensor([i for i, r in enumerate(eval_records) if r['question_type'] in types[stage]])
        assert len(pool), f'stage {stage + 1}: no training items of types {sorted(types[stage])} in {train_file}'
        total = stage_iters[stage]
        log(f"=== stage {stage + 1}/{len(types)}: {len(pool)} train items, {total} iters")
        it = it0 if stage == stage0 else 0
        t0 = time.time()
        while it < total:
            horizon = lr_decay_iters or total
            lr = get_lr(it, learning_rate, min_lr, min(warmup_iters, horizon // 10), horizon, lr_schedule)
            for group in optimizer.param_groups:
                group['lr'] = lr
            # every step's randomness is a function of (seed, rank, stage, iter): resume is exact without RNG state
            torch.manual_seed(seed + 1000003 * rank + 7919 * stage + it)
            micro_batches = []
            for micro in range(gradient_accumulation_steps):
                idx = pool[torch.randint(len(pool), (batch_size,))].tolist()
                micro_batches.append(get_batch('train', idx))
            n_answer = sum(int((b['targets'] != -1).sum()) for _, b in micro_batches)  # answer tokens of the step
            step_loss = 0.0
            for micro, (audio, batch) in enumerate(micro_batches):
                sync = ddp and not fsdp and micro < gradient_accumulation_steps - 1
                with (model.no_sync() if sync else nullcontext()), ctx:
                    # the model's loss is a mean over this micro-batch's answer tokens; weighted by its share of the
                    # step's tokens, the micro-batches add up to the mean of one batch k times larger
                    loss = model(audio, batch) * (int((batch['targets'] != -1).sum()) / n_answer)
                scaler.scale(loss).backward()
                step_loss += loss.item()
            if grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            it += 1
            if it % log_interval == 0 or it == total:
                dt = (time.time() - t0) / log_interval
                t0 = time.time()
                done = sum(stage_iters[:stage]) + it
                eta = (n_total - done) * (time.time() - t_loop) / (n_run + 1)
                log(f"stage {stage + 1} iter {it}/{total} (all stages {done}/{n_total}): loss {step_loss:.4f}, "
                    f"lr {lr:.2e}, {dt * 1000:.0f} ms/iter, ETA {duration(eta)}")
            if it % eval_interval == 0 or it == total:
                val = estimate_loss(eval_pool)
                log(f"stage {stage + 1} iter {it}: eval loss {val:.4f}")
                history.append((stage + 1, it, val))
                if val < best_val or always_save_checkpoint or it == total:
                    best_val = min(best_val, val)
                    checkpoint(stage + 1 if it == total else stage, 0 if it == total else it, best_val)
            n_run += 1
            if stop_after and n_run >= stop_after and it < total:
                checkpoint(stage, it, best_val)
                log(f"stop_after={stop_after}: stopped at stage {stage + 1} iter {it}; --init_from=resume goes on")
                break
    if master:
        lines = [f"# train_bat summary\n", f"- QA: {len(train_records)} train / {len(eval_records)} eval from {qa_dir}",
                 f"- LLM: {llm} ({lm.num_params() / 1e6:.2f}M params), projector {projector} ({n_query} tokens), "
                 f"trainable {n_train / 1e6:.2f}M", f"- stages {stages}: iters {stage_iters}, batch {batch_size}",
                 f"- eval loss (stage, iter, loss): {history}", f"- seconds: {time.time() - t_start:.0f}"]
        write_text(os.path.join(out_dir, 'summary.md'), '\n'.join(lines) + '\n')
        log(f"done in {time.time() - t_start:.0f}s -> {ckpt_path}")
    if ddp:
        barrier()  # leave together: a rank tearing gloo down while another still writes has aborted at exit
        dist.destroy_process_group()
