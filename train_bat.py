"""
Train BAT: frozen Spatial-AST tokens -> projector (Q-Former) -> audio prefix -> LLaMA answering spatial questions,
through the 3-stage curriculum in one command (I: A+B, II: A-D, III: A-E, each starting from the last).
The LLM is either a tiny LLaMA trained from scratch with our own SentencePiece tokenizer (the embedded default,
llm='scratch') or a LLaMA-2 directory (frozen, LoRA r 8 / alpha 32 / dropout 0.05 on wq, wv, as the released recipe).
Because the encoder is frozen and every QA item has a fixed IR, the encoder's tokens are computed once per distinct
(clip, IR) pair and cached under <out_dir>/enc_cache (cache_tokens=False runs convolution + features + encoder
every step on the device instead). The checkpoint holds only what trained (projector, LoRA or the scratch LLM)
and names the base weights it belongs on.

    python train_bat.py config/demo_bat.py                                  # CPU demo (~7 min on 2 cores)
    python train_bat.py config/paper_bat.py --device=cuda                   # one GPU
    torchrun --standalone --nproc_per_node=8 train_bat.py config/paper_bat.py   # DDP (add --fsdp=True to shard)
    python train_bat.py config/demo_bat.py --init_from=resume               # resume exactly where it stopped
"""
import json
import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch

from bat import (BAT, QFormerArgs, collate, batch_to, encoder_tokens, format_prompt, make_projector, build_llm,
                 name_index, true_rows)
from common import TYPE_LETTER, read_records, require, atomic_write, write_text

# CONTRACTS §2 letters -> question types; stage k trains on the union of its letters
LETTER_TYPES = {letter: [t for t, l in TYPE_LETTER.items() if l == letter] for letter in 'ABCDE'}
DEFAULT_STAGES = [['A', 'B'], ['A', 'B', 'C', 'D'], ['A', 'B', 'C', 'D', 'E']]
QA_FIELDS = ('audio_id', 'reverb_id', 'question_type', 'question', 'answer')


def expand_types(entry):
    """['A', 'B'] or ['CLASSIFICATION', ...] -> set of question_type strings."""
    out = set()
    for e in entry:
        out.update(LETTER_TYPES.get(e, [e]))
    return out


def per_type(setting, qtype, default):
    """A {letter or question_type: value} setting's value for qtype (the type's own entry first, then its letter)."""
    return setting.get(qtype, setting.get(TYPE_LETTER.get(qtype), default))


def teacher_shares(records, share, types):
    """(N,) chance that each item reads the true class rows: share for items of `types` (comma-separated letters or
    question types; '' = all), 0 for the rest."""
    taught = expand_types(types.split(',')) if types else set(TYPE_LETTER)
    assert taught <= set(TYPE_LETTER), f'teacher_types: unknown {sorted(taught - set(TYPE_LETTER))}; expected ' \
                                       f'letters A-E or question types {sorted(TYPE_LETTER)}'
    return torch.tensor([share * (r['question_type'] in taught) for r in records])


# what a two-source answer becomes when the two sounds trade places (teacher_swap)
OPPOSITE = {'left': 'right', 'right': 'left', 'front': 'behind', 'behind': 'front', 'above': 'below', 'below': 'above',
            'Yes': 'No', 'No': 'Yes'}


def swapped_answer(r):
    """The answer to r's question if its two sounds traded positions, or None where that is not known: Yes <-> No
    (binary direction and distance), left <-> right etc. (non-binary direction), the other sound (non-binary source),
    unchanged (the distance between them)."""
    qtype, ans, targets = r['question_type'], str(r['answer']), r.get('targets') or []
    if qtype in ('MIXUP_DIRECTION', 'MIXUP_DISTANCE_BOTH', 'MIXUP_NONBINARY_DIRECTION'):
        return OPPOSITE.get(ans)
    if qtype == 'MIXUP_NONBINARY_SOURCE' and len(targets) == 2:
        names = ['; '.join(t['labels']) for t in targets]
        return names[1 - names.index(ans)] if ans in names else None
    return ans if qtype == 'MIXUP_NONBINARY_DISTANCE' else None


def other_side(r):
    """A binary E question asked with the second word of its relation (right, behind, below, farther): one_sided holds
    these back at first."""
    return r['question_type'] in ('MIXUP_DIRECTION', 'MIXUP_DISTANCE_BOTH') and \
        re.search(r'\b(right|behind|below|farther|further)\b', r['question'].lower()) is not None


def swap_named(true, named):
    """true (N, C, 5) class rows with the positions (entries 1-4) of each item's two named classes exchanged."""
    out, i = true.clone(), torch.arange(len(true))
    out[i, named[:, 0], 1:] = true[i, named[:, 1], 1:]
    out[i, named[:, 1], 1:] = true[i, named[:, 0], 1:]
    return out


def stage_types(meta, n_stages):
    """The question types of each stage: meta.json['stages'] (a list, or a dict keyed by stage) if present, else
    CONTRACTS' mapping. n_stages=1 is the one-stage run on stage III (everything)."""
    stages = (meta or {}).get('stages')
    if isinstance(stages, dict):
        stages = [stages[k] for k in sorted(stages, key=str)]
    stages = [expand_types(s) for s in (stages or DEFAULT_STAGES)]
    assert n_stages in (1, 3), f'stages must be 1 or 3, got {n_stages}'
    return stages if n_stages == 3 else stages[-1:]


def get_lr(it, total, base_lr, min_lr, warmup):
    """Linear warmup, then cosine decay to min_lr at `total` (restarted for each stage)."""
    if it < warmup:
        return base_lr * (it + 1) / (warmup + 1)
    ratio = min(1.0, (it - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (base_lr - min_lr)


def read_qa(path):
    records = read_records(path)
    for i, r in enumerate(records):
        require(r, QA_FIELDS, f'{path}:{i + 1}')
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


def tokenize(records, tok, max_answer_tokens):
    """Per record: prompt ids (BOS + template) and answer ids (answer + EOS, cut to max_answer_tokens)."""
    prompts = [tok.encode(format_prompt(r['question']), bos=True, eos=False) for r in records]
    return prompts, [answer_ids(r['answer'], tok, max_answer_tokens) for r in records]


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
projector = 'qformer'          # 'qformer' | 'linear' | 'mlp'
qformer_layers = 8             # released recipe sizes (QFormerArgs defaults)
n_query = 64
qformer_dim = 768
qformer_heads = 12
qformer_ffn = 3072
qformer_dropout = 0.1
named_sources = False          # + 6 slots: the encoder's positions of the sounds the question names (bat.NamedSources;
                               # needs a class_positions encoder; not in the paper)
teacher_rows = 0.0             # named_sources: share of training items whose class rows are the true positions from
                               # the QA file's targets (bat.true_rows), not the encoder's: the LLM learns to compare
                               # clean positions, then reads the encoder's (not in the paper)
teacher_swap = 0.0             # teacher items whose two named sounds trade true positions, with the answer to match
                               # (swapped_answer: Yes <-> No, left <-> right, the other sound): the same question on the
                               # same audio then has both answers, so only reading the slots answers it (not in the paper)
one_sided = 0.0                # share of each stage's first iterations without other_side items: "is X left of Y"
                               # alone is answered by the sign of one difference; with "right of" in the mix, Yes/No
                               # is the XOR of word and sign, which a tiny LLM from scratch may never pick up (not in
                               # the paper)
teacher_types = ''             # teacher_rows only on these letters / question types (comma-separated, e.g. 'E');
                               # '' = every type
stages = 3                     # 3 = curriculum I -> II -> III | 1 = one-stage on III
type_weight = {}               # sampling weight per letter or question_type (default 1 each), e.g. {'E': 3.0}
stage_iters = [20000, 20000, 40000]  # iterations per stage (the last one alone when stages=1)
batch_size = 8                 # per process, per micro-step
gradient_accumulation_steps = 1
max_answer_tokens = 96         # released max_words
learning_rate = 1e-4           # AdamW peak lr (released recipe); restarted (warmup + cosine) per stage
min_lr = 1e-5
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
    stage_iters = list(stage_iters)
    assert len(stage_iters) == 3 or (stages == 1 and len(stage_iters) >= 1), 'stage_iters: three ints (or one)'
    stage_iters = stage_iters if stages == 3 else stage_iters[-1:]
    assert freeze_encoder or not cache_tokens, 'a trainable encoder needs cache_tokens=False'
    assert not fsdp or ddp, 'fsdp=True needs torchrun'
    train_file = train_file or os.path.join(qa_dir, 'train.jsonl')
    eval_file = eval_file or os.path.join(qa_dir, 'eval.jsonl')
    meta_path = os.path.join(qa_dir, 'meta.json')
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    audio_root = audio_root or meta.get('audio_root', '')
    reverb_root = reverb_root or meta.get('reverb_root', '')
    assert audio_root and reverb_root, f'no audio_root/reverb_root: set them, or give a qa_dir with meta.json'
    log = print if master else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if dtype == 'float32' or fsdp else torch.autocast(device_type, dtype=ptdtype)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    barrier = dist.barrier if ddp else (lambda: None)
    t_start = time.time()

    # data
    train_records, eval_records = read_qa(train_file), read_qa(eval_file)
    n_all = len(train_records)
    train_records = subset_per_type(train_records, max_items_per_type, seed)
    types = stage_types(meta, stages)
    log(f"train {len(train_records)} (of {n_all}) / eval {len(eval_records)} QA items; stage types: "
        + ' | '.join(','.join(sorted(t)) for t in types))

    # tokenizer (trained here for the scratch LLM, on rank 0 only)
    tok_path = tokenizer or (os.path.join(out_dir, 'tokenizer.model') if llm == 'scratch'
                             else os.path.join(llm, 'tokenizer.model'))
    if llm == 'scratch' and not tokenizer and master and not (init_from == 'resume' and os.path.exists(tok_path)):
        llama.train_tokenizer(tokenizer_texts(train_records), os.path.join(out_dir, 'tokenizer'), vocab_size)
    barrier()
    tok = llama.Tokenizer(tok_path)
    train_tok, eval_tok = tokenize(train_records, tok, max_answer_tokens), tokenize(eval_records, tok, max_answer_tokens)
    log(f"tokenizer {tok_path}: {tok.n_words} pieces; prompt ~{np.mean([len(p) for p in train_tok[0]]):.0f} "
        f"+ answer ~{np.mean([len(a) for a in train_tok[1]]):.1f} tokens")

    # encoder and its cached tokens (rank 0 fills the cache, the others then read it)
    encoder, enc_ckpt = spatial_ast.load_checkpoint(encoder_ckpt, device)
    encoder.requires_grad_(not freeze_encoder)
    classes = enc_ckpt.get('classes')  # the encoder's class order
    assert not named_sources or (encoder.args.class_positions and classes), \
        f'named_sources=True needs an encoder trained with class_positions=True (and its classes): {encoder_ckpt}'
    named = {name: name_index([r['question'] for r in recs], classes) if named_sources else None
             for name, recs in (('train', train_records), ('eval', eval_records))}
    assert not teacher_rows or (named_sources and cache_tokens and all(r.get('targets') for r in train_records)), \
        f'teacher_rows needs named_sources=True, cache_tokens=True and items with targets (make_qa.py files): {train_file}'
    assert not teacher_swap or teacher_rows, f'teacher_swap={teacher_swap} trades true positions: set teacher_rows > 0'
    teacher = true_rows(train_records, classes) if teacher_rows else None
    teacher_share = teacher_shares(train_records, teacher_rows, teacher_types)
    swap_ans = [swapped_answer(r) if teacher_swap else None for r in train_records]
    swappable = torch.tensor([a is not None for a in swap_ans]) & (named['train'][:, 1] >= 0) & \
        (named['train'][:, 0] != named['train'][:, 1]) if teacher is not None else None
    swap_tok = {i: answer_ids(a, tok, max_answer_tokens) for i, a in enumerate(swap_ans) if a is not None}
    if teacher_swap and teacher is not None:
        log(f"teacher_swap: {int(swappable.sum())} of {len(train_records)} train items can trade their two sounds")
    cache_dir = os.path.join(out_dir, 'enc_cache')
    enc = {}
    if cache_tokens:
        for turn in ('master', 'others'):
            if (turn == 'master') == master:
                for name, recs in (('train', train_records), ('eval', eval_records)):
                    enc[name] = encoder_tokens(recs, encoder, encoder_ckpt, audio_root, reverb_root, cache_dir,
                                               device, clip_seconds, encode_batch_size, log=log,
                                               class_rows=named_sources)
            barrier()
        encoder_dim = enc['train'][0].shape[-1]
        encoder = encoder.cpu()  # not needed any more on the device
    else:
        from features import AudioCache, qa_waveforms, binaural_features
        audio_cache = AudioCache()
        encoder_dim = encoder.args.dim
    log(f"encoder: {encoder_ckpt} dim {encoder_dim}" + (f", cached tokens {tuple(enc['train'][0].shape)}" if enc else ''))

    # model
    qargs = QFormerArgs(n_layers=qformer_layers, n_query=n_query, dim=qformer_dim, n_heads=qformer_heads,
                        ffn_dim=qformer_ffn, encoder_dim=encoder_dim, dropout=qformer_dropout, projector=projector,
                        table_tokens=encoder.n_table_tokens, named_sources=len(classes) if named_sources else 0)
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
    model = BAT(make_projector(qargs), lm, classes)
    if not freeze_encoder:
        model.encoder = encoder  # trains with the rest, and its weights go into the checkpoint
    if not fsdp:
        model.to(device)  # FSDP moves (and shards) it block by block itself
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    trainable_names |= {k for k in model.state_dict() if k.startswith(('encoder.', 'named.'))}  # + BN stats, scale
    if named_sources and cache_tokens:  # the slots read standardised positions (bat.NamedSources.fit)
        rows = enc['train'][0][:, -len(classes):, :5][enc['train'][1]]  # (N, C, 5) each item's class rows
        has_targets = all(r.get('targets') for r in train_records)  # our QA files: fit true_rows' units too
        model.named.fit(rows, named['train'], teacher if teacher is not None else
                        true_rows(train_records, classes) if has_targets else None)
        log(f"named sources: encoder rows' spread (right, front, up, distance / 2) "
            f"{[round(v, 3) for v in model.named.scale.tolist()]}")
    log(f"model: projector {sum(p.numel() for p in model.projector.parameters()) / 1e6:.2f}M, "
        f"LLM {lm.num_params() / 1e6:.2f}M; trainable {n_train / 1e6:.2f}M")
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    stage0, it0, best_val = 0, 0, float('inf')
    if init_from == 'resume':
        ck = torch.load(ckpt_path, map_location='cpu', weights_only=False)
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
        ids = torch.as_tensor(idx)
        answers = [answers[i] for i in idx]
        if split == 'train' and teacher is not None:  # some items read the true positions instead
            taught = torch.rand(len(idx)) < teacher_share[ids]
            traded = taught & (torch.rand(len(idx)) < teacher_swap) & swappable[ids]  # ... with the two sounds traded
            answers = [swap_tok[i] if t else a for i, t, a in zip(idx, traded.tolist(), answers)]
        batch = collate([prompts[i] for i in idx], answers, qargs.n_prefix, tok.pad_id)
        if named[split] is not None:
            batch['named'] = named[split][idx]
        batch = batch_to(batch, device)
        if cache_tokens:
            tokens, index = enc[split]
            audio = tokens[index[ids]].to(device, torch.float32)
            if split == 'train' and teacher is not None:
                C, true = len(classes), teacher[ids]
                true[traded] = swap_named(true[traded], named[split][ids[traded]])
                audio[taught, -C:] = raw.named.from_true(audio[taught, -C:], true[taught], batch['named'][taught])
        else:
            wav = qa_waveforms([recs[i] for i in idx], audio_root, reverb_root, audio_cache, device,
                               clip_seconds=clip_seconds)
            with torch.set_grad_enabled(not freeze_encoder):  # the frozen encoder sits outside the model
                audio = (encoder if freeze_encoder else raw.encoder).tokens(binaural_features(wav), named_sources)
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
            save_checkpoint(ckpt_path, {
                'model': state, 'optimizer': opt_state, 'iter_num': sum(stage_iters[:stage]) + stage_iter,
                'stage': stage, 'stage_iter': stage_iter, 'best_val_loss': val, 'config': config,
                'model_args': {'projector': asdict(qargs), 'llm': llm_args},
                'base': {'encoder': os.path.abspath(encoder_ckpt), 'llm': llm if llm == 'scratch' else os.path.abspath(llm),
                         'tokenizer': os.path.abspath(tok_path)},
                'classes': meta.get('classes') or enc_ckpt.get('classes'), 'qa_dir': os.path.abspath(qa_dir),
                'audio_root': os.path.abspath(audio_root), 'reverb_root': os.path.abspath(reverb_root),
            })

    # training: the curriculum
    model.train()
    history, n_run = [], 0
    for stage in range(stage0, len(types)):
        if stop_after and n_run >= stop_after:
            break
        # this process's share of the items (every world-th one, as a DistributedSampler): DDP ranks see disjoint data
        pool = torch.tensor([i for i, r in enumerate(train_records) if r['question_type'] in types[stage] and
                             i % world == rank])
        weight = torch.tensor([per_type(type_weight, train_records[i]['question_type'], 1.0) for i in pool.tolist()],
                              dtype=torch.float)
        held = torch.tensor([other_side(train_records[i]) for i in pool.tolist()]) if one_sided else None
        eval_pool = torch.tensor([i for i, r in enumerate(eval_records) if r['question_type'] in types[stage]])
        assert len(pool), f'stage {stage + 1}: no training items of types {sorted(types[stage])} in {train_file}'
        total = stage_iters[stage]
        log(f"=== stage {stage + 1}/{len(types)}: {len(pool)} train items, {total} iters" +
            (f"; {int(held.sum())} other_side items held back for {math.ceil(one_sided * total)} iters" if one_sided else ''))
        it = it0 if stage == stage0 else 0
        t0 = time.time()
        while it < total:
            lr = get_lr(it, total, learning_rate, min_lr, min(warmup_iters, total // 10))
            for group in optimizer.param_groups:
                group['lr'] = lr
            # every step's randomness is a function of (seed, rank, stage, iter): resume is exact without RNG state
            torch.manual_seed(seed + 1000003 * rank + 7919 * stage + it)
            micro_batches = []
            for micro in range(gradient_accumulation_steps):
                w = weight * ~held if held is not None and it < one_sided * total else weight
                pick = torch.multinomial(w, batch_size, replacement=True) if type_weight or held is not None else \
                    torch.randint(len(pool), (batch_size,))
                idx = pool[pick].tolist()
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
                log(f"stage {stage + 1} iter {it}/{total}: loss {step_loss:.4f}, "
                    f"lr {lr:.2e}, {dt * 1000:.0f} ms/iter")
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
