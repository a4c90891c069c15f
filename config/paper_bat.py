# The released BAT recipe (SLAM-LLM examples/seld_spatialsoundqa/scripts/finetune_spatial-ast_qformer_llama_2_7b.sh,
# seld_config.py), exactly: a frozen Spatial-AST's 515 tokens -> Q-Former (8 layers, 64 queries, hidden 768) ->
# Linear + LayerNorm -> LLaMA-2-7B frozen + LoRA (r 8, alpha 32, dropout 0.05 on q, v); one stage on stage3-mixup
# (types A-E), batch 8, AdamW lr 1e-4 without weight decay, 20k warmup steps then a straight line to 0 at 200k,
# no clipping, prompt + answer tokenised as one string, 10 s clips zero-padded, best eval loss kept.
#   python train_bat.py config/paper_bat.py --device=cuda
#   python eval.py --ckpt=out/paper_bat/ckpt.pt --eval_file=<closed-end/*/eval-*.json> --device=cuda   (beam 4)
# The script's 8-GPU branch (torchrun, 8 x 8 a step) stops after 5 epochs, before the line reaches 0: add
# --stage_iters=[<5 epochs of steps>] --lr_decay_iters=200000.
out_dir = 'out/paper_bat'
train_file = 'data/SpatialAudio/SpatialSoundQA/closed-end/stage3-mixup/train.json'
eval_file = ('data/SpatialAudio/SpatialSoundQA/closed-end/stage3-mixup/eval-stage3-direction.json,'  # eval loss only
             'data/SpatialAudio/SpatialSoundQA/closed-end/stage3-mixup/eval-stage3-distance.json')
audio_root = 'data/SpatialAudio/SpatialSoundQA/AudioSet'               # audio_id + .wav under it
reverb_root = 'data/SpatialAudio/SpatialSoundQA/mp3d_reverb/binaural'  # reverb_id under it
encoder_ckpt = 'out/paper_encoder/ckpt.pt'  # config/paper_encoder.py's; the released encoder:
                                            # --encoder_ckpt=data/SpatialAudio/SpatialAST/finetuned.pth
llm = 'models/Llama-2-7b-hf'   # local HF-layout dir of meta-llama/Llama-2-7b-hf (config.json, safetensors, tokenizer.model)
clip_seconds = 10.0
clip_pad = 'zero'
lora_rank = 8
lora_alpha = 32
lora_dropout = 0.05
lora_targets = 'wq,wv'
projector = 'qformer'    # QFormerArgs defaults: 8 layers, 64 queries, 768 hidden, 12 heads, FFN 3072, dropout 0.1
stages = 1
stage_iters = [200000]
batch_size = 8
gradient_accumulation_steps = 1
learning_rate = 1e-4
lr_schedule = 'linear'
lr_decay_iters = 0       # = 200000, the stage's length
warmup_iters = 20000
min_lr = 0.0
weight_decay = 0.0
grad_clip = 0.0
max_answer_tokens = 96   # the released max_words
joint_tokens = True
dtype = 'bfloat16'
fsdp = False             # True: shard the 7B over the torchrun processes (per-block, bf16)
eval_interval = 2000     # the released validation_interval
always_save_checkpoint = False  # keep the best eval loss, as the released run
log_interval = 50
